"""Latency lookup tables, the differentiable expected latency, the Lagrangian budget and predicted vs measured
(lightning_dlstrat/latency.py, methods/latency_budget.py). Tables are profiled here on tiny evaluation networks."""

import itertools
import json
import math
import random
from pathlib import Path

import lightning as L
import pytest
import torch
from typer.testing import CliRunner

from lightning_dlstrat.cli import app
from lightning_dlstrat.core import DlstratError
from lightning_dlstrat.latency import LatencyTable, profile
from lightning_dlstrat.methods.latency_budget import LatencyBudget
from lightning_dlstrat.spaces import SPACES, get_space
from lightning_dlstrat.spaces.darts.network import DARTSNetwork
from lightning_dlstrat.spaces.nb201.network import NB201Network
from _helpers import RecordRank, assert_clean_failure, make_trainer, run_dir_of, same

runner = CliRunner()
TINY_NETS = {  # a small evaluation network per space, on 8x8 grey inputs
    "darts": lambda g: DARTSNetwork(g, C=4, layers=3, in_chans=1, num_classes=10).eval(),
    "nb201": lambda g: NB201Network(g, C=4, N=1, in_chans=1, num_classes=10).eval(),
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    made = {}
    for name, build in TINY_NETS.items():
        table = profile(get_space(name), build, (1, 8, 8), network={"tiny": True}, threads=1, calibrate=3)
        made[name] = (table, table.save(out / f"{name}.json"))
    return made


@pytest.mark.parametrize("name", list(SPACES))
def test_a_table_times_every_operation_at_every_position(name, tables):
    table, path = tables[name]
    space = get_space(name)
    probe = TINY_NETS[name](space.sample(random.Random(0)))
    positions = space.latency_positions(probe, (1, 8, 8))
    assert {k: len(v) for k, v in table.cells.items()} == {k: len(v) for k, v in positions.items()}
    assert all(len(edges) == len(space.topology.edges) and all(len(ops) == len(space.operations) and min(ops) > 0 for ops in edges)
               for rows in table.cells.values() for edges in rows)
    assert table.key["threads"] == 1 and table.key["runtime"] == "torch" and table.key["device"] == "cpu"
    assert LatencyTable.load(path) == table  # the file holds the table
    # prediction: the fixed cost plus the entries of the kept operations, every cell (a transcription of the sum)
    genotype = space.sample(random.Random(5))
    chosen = space.chosen_edges(genotype)
    total = table.fixed_ms + sum(cell[e][table.primitives.index(op)] for kind, rows in table.cells.items() for cell in rows for e, op in chosen[kind])
    assert table.predict(space, genotype) == pytest.approx(total)


def test_timings_are_interleaved_rounds_and_their_median(monkeypatch):
    """A slow spell of the machine lands on one round of every entry, not on whichever entry it met: the median drops it."""
    import lightning_dlstrat.latency as latency

    calls = []
    slow = {3}  # the 4th timing (the first of round 2) meets a slow spell

    def fake(module, in_shape, **kw):
        calls.append(module)
        return 10.0 * (len(calls) in {n + 1 for n in slow}) + {"a": 1.0, "b": 2.0}[module]

    monkeypatch.setattr(latency, "time_network", fake)
    medians = latency.time_in_rounds({"a": ("a", (1,)), "b": ("b", (1,))}, rounds=3, threads=1)
    assert calls == ["a", "b", "a", "b", "a", "b"]  # A B A B A B
    assert medians == {"a": 1.0, "b": 2.0}
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        latency.time_in_rounds({"a": ("a", (1,))}, rounds=0)


def test_onnxruntime_rounds_export_each_network_once(monkeypatch):
    """In onnxruntime every round times the same exported file: one export per network, not one per round."""
    import lightning_dlstrat.latency as latency

    exported = []
    real = latency.onnx_file
    monkeypatch.setattr(latency, "onnx_file", lambda net, shape, batch, path: exported.append(path) or real(net, shape, batch, path))
    nets = {"wide": (torch.nn.Conv2d(1, 8, 3), (1, 8, 8)), "narrow": (torch.nn.Conv2d(1, 2, 3), (1, 8, 8))}
    ms = latency.time_in_rounds(nets, rounds=3, runtime="onnxruntime", threads=1, repeats=5)
    assert len(exported) == 2 and set(ms) == {"wide", "narrow"} and all(v > 0 for v in ms.values())


def test_damaged_or_foreign_tables_are_refused(tables, tmp_path):
    _, path = tables["nb201"]
    d = json.loads(path.read_text())
    for change, message in [({"format": 99}, "not a latency table of format 1"), ({"cells": {"cell": [[[1.0]]]}}, "damaged")]:
        (tmp_path / "t.json").write_text(json.dumps({**d, **change}))
        with pytest.raises(DlstratError, match=message):
            LatencyTable.load(tmp_path / "t.json")
    with pytest.raises(DlstratError, match="does not exist; make one with `dlstrat latency profile"):
        LatencyTable.load(tmp_path / "missing.json")


@pytest.mark.parametrize("name", list(SPACES))
def test_the_fastest_derivable_network_and_the_budget_verdicts(name, tables):
    table, _ = tables[name]
    space = get_space(name)
    fastest = table.fastest_ms()
    rng = random.Random(0)
    cells = [space.sample(rng) for _ in range(300)]
    sampled = min(table.predict(space, g) for g in cells if "none" not in str(g))
    if name == "nb201":  # every cell of 6 edges, 4 operations (never none): the minimum over all 4,096 cells
        ops = [op for op in space.operations if op != "none"]
        best = min(table.predict(space, space.from_choices(dict(zip(space.choices(), combo))))
                   for combo in itertools.product(ops, repeat=len(space.choices())))
        assert fastest == pytest.approx(best)
    assert fastest <= sampled + 1e-9  # no derivable cell is faster
    assert "below the fastest network this space derives" in table.verdict(fastest + 1.0, fastest * 0.5 if fastest > 0 else -1.0)
    assert table.verdict(sampled, sampled * 1.01).startswith(f"budget {sampled * 1.01:g} ms met")
    assert "exceeded by 10.0 %" in table.verdict(fastest * 1.1 if fastest > 0 else 1.1, fastest if fastest > 0 else 1.0)


class WeightsOnly:
    """What a genotype rule reads of a supernet: its softmax weights per cell type (``edge_weights``)."""

    def __init__(self, blocks):
        self.blocks = blocks

    def edge_weights(self):
        ws = [torch.softmax(b, dim=-1) for b in self.blocks]
        return ws if len(ws) > 1 else ws[0]


@pytest.mark.parametrize("name", list(SPACES))
def test_the_derived_network_is_brought_within_the_budget(name, tables):
    """latency_project: cheaper operations on the kept edges, never none, until the prediction meets the budget."""
    table, path = tables[name]
    space = get_space(name)
    ops = list(space.operations)
    torch.manual_seed(1)
    for trial in range(4):
        blocks = [torch.randn(len(space.topology.edges), len(ops)) for _ in space.cell_types]
        net = WeightsOnly(blocks)
        derived = space.discretise(blocks if len(blocks) > 1 else blocks[0])
        # a cell the rule left unconnected is connected first (its own test below); the budget is held from there
        derived = LatencyBudget({"latency_target": 1e9, "latency_table": str(path)}, ops).reconnect(space, derived, space.cell_weights(net))
        before = table.predict(space, derived)
        # the cheapest network on the kept edges (a transcription: each kept edge's cheapest operation other than
        # none; an edge the rule left at none stays none)
        lat = {cell: torch.tensor(rows).sum(0) for cell, rows in table.cells.items()}  # (E, O) per cell type
        floor = table.fixed_ms + sum(min(float(lat[cell][e, j]) for j, o in enumerate(ops) if o != "none" or op == "none")
                                     for cell, chosen in space.chosen_edges(derived).items() for e, op in chosen)
        for target in (before * 1.01, (before + floor) / 2, floor * 0.5):
            method = LatencyBudget({"latency_target": target, "latency_table": str(path)}, ops)
            projected = method.genotype(net, space, derived)
            after = table.predict(space, projected)
            kept = {cell: [e for e, _ in chosen] for cell, chosen in space.chosen_edges(projected).items()}
            assert kept == {cell: [e for e, _ in chosen] for cell, chosen in space.chosen_edges(derived).items()}  # the same edges
            new_none = [(c, e) for c, ch in space.chosen_edges(projected).items() for (e, op), (_, old) in zip(ch, space.chosen_edges(derived)[c]) if op == "none" != old]
            assert not new_none
            if target >= before:
                assert projected == derived  # within the budget already: the rule's network
            elif target >= floor:
                assert after <= target + 1e-9 and after < before
            else:
                assert after == pytest.approx(floor)  # below reach: the cheapest network on those edges, and the report says so
            off = LatencyBudget({"latency_target": target, "latency_table": str(path), "latency_project": False}, ops)
            assert off.genotype(net, space, derived) == derived


# the 4 paths from a NAS-Bench-201 cell's input (node 0) to its output (node 3), as (source, target) edges
NB201_PATHS = [[(0, 3)], [(0, 1), (1, 3)], [(0, 2), (2, 3)], [(0, 1), (1, 2), (2, 3)]]


def test_a_nb201_cell_connects_when_some_path_has_no_none():
    space = get_space("nb201")
    edges = list(space.topology.edges)
    for combo in itertools.product(space.operations, repeat=len(edges)):  # all 15,625 cells
        g = space.from_choices(dict(zip(space.choices(), combo)))
        assert g.connected == any(all(combo[edges.index(e)] != "none" for e in path) for path in NB201_PATHS)
        assert (space.reconnections(g) == []) == g.connected


def test_a_budget_never_derives_a_cell_that_does_not_connect(tables):
    """A budget pulls weight towards none (it costs nothing); the NAS-Bench-201 rule keeps none, so its cell can carry
    nothing. latency_project connects it along the path predicted fastest, each none edge on it given its strongest
    operation other than none; a connected cell is left to the rule."""
    table, path = tables["nb201"]
    space = get_space("nb201")
    ops, edges = list(space.operations), list(space.topology.edges)
    torch.manual_seed(3)
    for trial in range(6):
        alpha = torch.randn(len(edges), len(ops))  # (6, 5)
        for source, target in edges:
            if source == 0 or trial % 2:  # every edge out of the input, or every edge, strongest at none
                alpha[edges.index((source, target)), ops.index("none")] = 10.0
        net = WeightsOnly([alpha])
        derived = space.discretise(alpha)
        assert not derived.connected
        w = torch.softmax(alpha, -1)  # (6, 5)
        strongest = {e: ops[max((j for j, o in enumerate(ops) if o != "none"), key=lambda j: float(w[edges.index(e), j]))] for e in edges}
        candidates = []
        for p in NB201_PATHS:  # a transcription of the repair: fill one path's none edges, keep the fastest
            choice = dict(zip(edges, derived.ops))
            choice.update({e: strongest[e] for e in p if choice[e] == "none"})
            candidates.append(space.from_choices(dict(zip(space.choices(), (choice[e] for e in edges)))))
        expected = min(candidates, key=lambda g: table.predict(space, g))
        method = LatencyBudget({"latency_target": 1e9, "latency_table": str(path)}, ops)
        projected = method.genotype(net, space, derived)
        assert projected.connected and projected == expected
        off = LatencyBudget({"latency_target": 1e9, "latency_table": str(path), "latency_project": False}, ops)
        assert off.genotype(net, space, derived) == derived  # the rule's network, as the benchmark's code derives it
    connected = space.from_choices(dict(zip(space.choices(), ["none", "nor_conv_3x3", "none", "none", "none", "skip_connect"])))
    assert connected.connected  # 0 -> 2 -> 3 (rows: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)
    assert LatencyBudget({"latency_target": 1e9, "latency_table": str(path)}, ops).reconnect(space, connected, {"cell": torch.zeros(6, 5)}) == connected


def one_hot_alpha(space, genotype, strength: float = 40.0) -> torch.Tensor:
    """alpha (E_total, O) whose softmax picks ``genotype``'s operations, and (DARTS) its two edges per node by far."""
    ops = list(space.operations)
    chosen = space.chosen_edges(genotype)
    blocks = []
    for kind in space.cell_types:
        alpha = torch.full((len(space.topology.edges), len(ops)), -strength)
        if "none" in ops:
            alpha[:, ops.index("none")] = 0.0  # unkept DARTS edges: none, which the rule never picks
        for e, op in chosen[kind]:
            alpha[e] = -strength
            alpha[e, ops.index(op)] = strength
        blocks.append(alpha)
    return torch.cat(blocks)


@pytest.mark.parametrize("name", list(SPACES))
def test_expected_latency_of_a_decided_alpha_is_the_tables_prediction(name, tables):
    table, path = tables[name]
    space = get_space(name)
    method = LatencyBudget({"latency_target": 1.0, "latency_table": str(path)}, space.operations)
    for seed in range(3):
        genotype = space.sample(random.Random(seed))
        alpha = one_hot_alpha(space, genotype).requires_grad_()
        expected = method.expected_latency(alpha)
        assert float(expected.detach()) == pytest.approx(table.predict(space, genotype), rel=1e-4)
    uniform = torch.zeros(len(space.topology.edges) * len(space.cell_types), len(space.operations), requires_grad=True)
    soft = method.soft_latency(uniform)
    if name == "nb201":  # every edge kept: E = fixed + sum over edges and cells of the mean latency (softmax of zeros)
        lat = torch.tensor(table.cells["cell"]).sum(0)  # (E, O)
        assert float(soft.detach()) == pytest.approx(table.fixed_ms + float(lat.mean(-1).sum()), rel=1e-5)
    # straight through: the value is the derived network's prediction, the gradient the soft expectation's
    torch.manual_seed(0)
    for _ in range(5):
        alpha = torch.randn(uniform.shape, requires_grad=True)
        expected = method.expected_latency(alpha)
        blocks = list(alpha.detach().split(len(space.topology.edges)))
        genotype = space.discretise(blocks if len(blocks) > 1 else blocks[0])  # the space's own rule
        assert float(expected.detach()) == pytest.approx(table.predict(space, genotype), rel=1e-5)
        expected.backward()
        soft_grad = torch.autograd.grad(method.soft_latency(alpha), alpha)[0]
        assert torch.allclose(alpha.grad, soft_grad) and alpha.grad.abs().sum() > 0


def test_the_multiplier_rises_while_the_budget_is_exceeded_and_falls_to_zero(tables):
    """Dual ascent: lambda <- max(0, lambda + eta (E / T - 1)), one step per architecture step."""
    _, path = tables["nb201"]
    space = get_space("nb201")
    alpha = torch.zeros(6, 5)
    method = LatencyBudget({"latency_target": 1.0, "latency_table": str(path), "latency_lr": 0.1}, space.operations)
    e = float(method.expected_latency(alpha))
    method.target = e / 2  # exceeded twice over
    lam = 0.0
    for _ in range(3):
        term = method.regulariser(alpha, 0, 1)
        assert float(term) == pytest.approx(lam * e / method.target)
        lam = max(0.0, lam + 0.1 * (e / method.target - 1))
        assert method.multiplier == pytest.approx(lam)
    method.target = e * 4  # met: the multiplier decays to 0 and stays there
    for _ in range(20):
        method.regulariser(alpha, 0, 1)
    assert method.multiplier == 0.0
    restored = LatencyBudget({"latency_target": 1.0, "latency_table": str(path)}, space.operations)
    restored.load_state_dict({**method.state_dict(), "multiplier": 0.7})
    assert restored.multiplier == 0.7  # checkpointed with the search


def test_latency_budget_settings_are_checked(tables):
    from lightning_dlstrat.trainers.darts_search import DARTSSearch

    _, path = tables["nb201"]
    nb201 = {"C": 4, "N": 1, "space": "nb201"}
    for kw, message in [({**nb201, "latency_target": -1.0, "latency_table": str(path)}, "positive number of milliseconds"),
                        ({**nb201, "latency_target": 1.0}, "needs latency_table"),
                        ({"C": 4, "layers": 3, "latency_target": 1.0, "latency_table": str(path)}, "times the operations")]:  # an NB201 table for a DARTS search
        with pytest.raises(ValueError, match=message):
            DARTSSearch(in_shape=(1, 8, 8), num_classes=10, **kw)


class RecordMultiplier(L.Callback):
    """Each rank saves the latency budget's multiplier at the end of the search."""

    def __init__(self, out: str):
        self.out = out

    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.method("latency").multiplier, f"{self.out}/lambda{trainer.global_rank}.pt")


def test_alpha_and_multiplier_identical_across_ddp_ranks(tables, tmp_path):
    from lightning_dlstrat.data import DigitsDataModule
    from lightning_dlstrat.trainers.darts_search import DARTSSearch

    _, path = tables["nb201"]
    L.seed_everything(0)
    dm = DigitsDataModule(bilevel=True, batch_size=16)
    module = DARTSSearch(in_shape=(1, 8, 8), num_classes=10, C=4, N=1, space="nb201", method="gdas", latency_target=1e-3, latency_table=str(path))
    make_trainer(tmp_path, devices=2, strategy="ddp_spawn", limit_val_batches=0, callbacks=[RecordRank(str(tmp_path)), RecordMultiplier(str(tmp_path))]).fit(module, datamodule=dm)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert same(r0["end"], r1["end"]) and not same(r0["end"], r0["start"])
    l0, l1 = (torch.load(tmp_path / f"lambda{r}.pt") for r in (0, 1))
    assert l0 == l1 > 0  # the budget (1 us) is exceeded at every step, alike on both ranks


@pytest.mark.slow
def test_a_search_under_a_budget_reports_predicted_and_measured_latency(tmp_path, monkeypatch):
    import lightning_dlstrat.latency as latency

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(latency, "shipped_dir", lambda: tmp_path / "shipped")  # no shipped table: this machine's is measured
    args = ["fit", "--model", "darts", "--model.space=nb201", "--model.C=4", "--model.N=1", "--max-epochs", "2", "--out", str(tmp_path / "runs")]
    result = runner.invoke(app, [*args, "--model.latency_target=0.05"])
    assert result.exit_code == 0, result.output
    assert "measuring the nb201 space's operations" in result.output  # profiled once ...
    run = run_dir_of(result.output)
    summary = json.loads((run / "summary.json").read_text())
    latency = summary["latency"]
    assert latency["predicted_ms"] > 0 and latency["measured_ms"]["torch"] > 0 and latency["target_ms"] == 0.05
    assert latency["error_pct"] == pytest.approx(100 * (latency["predicted_ms"] - latency["measured_ms"]["torch"]) / latency["measured_ms"]["torch"], abs=0.1)
    assert json.loads((run / "latency.json").read_text())["predicted_ms"] == latency["predicted_ms"]
    assert LatencyTable.load(run / "latency_table.json").space == "nb201"
    assert latency["table"] == "latency_table.json"  # the run's copy, named relative to it: no cache path in the run
    assert str(tmp_path) not in (run / "latency.json").read_text()
    assert "predicted" in result.output and "measured" in result.output
    # 0.05 ms is below any network of the tiny table: said at the start and in the report
    assert latency["within_budget"] is False and latency["fastest_ms"] > 0.05
    assert latency["measured_within_budget"] is False  # ... and the measurement says so too
    said = latency["verdict"].rsplit("; measured over it by ", 1)[1]
    assert said.endswith(" %") and float(said[:-2]) == pytest.approx(100 * (latency["measured_ms"]["torch"] / 0.05 - 1), abs=0.2)
    assert f"measured over it by {said}" in result.output
    assert result.output.count("budget 0.05 ms is below the fastest network this space derives") == 2
    import csv

    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("latency/multiplier")]
    assert rows and float(rows[-1]["latency/multiplier"]) > 0  # the budget, far below any cell, raised it
    # a second search reuses the cached table
    again = runner.invoke(app, [*args, "--model.latency_target=0.05", "--max-epochs", "1"])
    assert again.exit_code == 0 and "measuring" not in again.output, again.output


def test_latency_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = runner.invoke(app, ["latency", "profile", "--space", "nb201", "--threads", "1", "--out", str(tmp_path / "t.json")])
    assert made.exit_code == 0, made.output
    assert "fixed cost" in made.output and LatencyTable.load(tmp_path / "t.json").key["threads"] == 1
    checked = runner.invoke(app, ["latency", "check", "--space", "nb201", "--threads", "1", "--samples", "3", "--out", str(tmp_path / "c.json")])
    assert checked.exit_code == 0, checked.output
    report = json.loads((tmp_path / "c.json").read_text())
    assert len(report["samples"]) == 3 and math.isfinite(report["median_abs_error_pct"])
    assert_clean_failure(runner.invoke(app, ["latency", "profile", "--runtime", "tvm"]), "--runtime must be torch or onnxruntime")
    assert_clean_failure(runner.invoke(app, ["latency", "profile", "--space", "nope"]), "--space:")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_table_on_the_gpu_times_with_cuda_events(tmp_path):
    table = profile(get_space("nb201"), lambda g: TINY_NETS["nb201"](g).cuda(), (1, 8, 8), network={"tiny": True}, device="cuda", calibrate=2)
    assert table.key["device"] == "cuda" and table.fixed_ms == table.fixed_ms


def test_random_search_can_take_measured_latency_as_its_second_objective(tmp_path):
    result = runner.invoke(app, ["fit", "--model", "random-nas", "--model.space=nb201", "--model.sampler=nsga2", "--model.objective=latency",
                                 "--trials", "2", "--max-epochs", "1", "--model.C=4", "--model.N=1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run = run_dir_of(result.output)
    trials = json.loads((run / "trials.json").read_text())
    assert all(t["latency_ms"] > 0 for t in trials) and (run / "pareto_front.png").is_file()
    assert "Pareto front of accuracy and measured latency" in result.output
    assert_clean_failure(runner.invoke(app, ["fit", "--model", "random-nas", "--model.objective=latency", "--out", str(tmp_path / "x")]),
                         "is the second objective of --model.sampler=nsga2")


def test_a_shipped_table_is_used_only_for_its_own_key(tables, tmp_path, monkeypatch):
    import lightning_dlstrat.latency as latency

    table, _ = tables["nb201"]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(latency, "shipped_dir", lambda: tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    table.save(tmp_path / "shipped" / latency.cached_path(table.key).name)
    assert latency.find_table(table.key) == tmp_path / "shipped" / latency.cached_path(table.key).name
    for change in ({"threads": 2}, {"batch": 8}, {"device_name": "another CPU"}, {"versions": {"torch": "0.0"}}):
        assert latency.find_table({**table.key, **change}) is None, change
    # the package ships the tables of this repository's CPU, each a valid table of its space
    shipped = sorted((Path(latency.__file__).parent / "assets" / "latency").glob("*.json"))
    assert {p.name.split("-")[0] for p in shipped} == set(SPACES)
    for path in shipped:
        t = LatencyTable.load(path)
        assert path.name == f"{t.space}-{latency.key_hash(t.key)}.json" and t.key["batch"] == 1
