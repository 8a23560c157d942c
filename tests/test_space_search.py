"""The search module with a pluggable space: every registered space, and the NAS-Bench-201 space (``--model.space=nb201``).

Tests that take the ``space`` fixture (conftest.py) run once per space of
``lightning_dlstrat.spaces.SPACES`` with its small settings (``_helpers.SPACE_CASES``): alpha
identical on two DDP ranks, bf16 on CPU, resume, the per-space presets, and the space interface a
sampler and the search module use (``choices`` / ``from_choices`` / ``to_choices``, cell weights,
genotype files). The rest is nb201's: the hypergradients (order 2 against exact double backward, as
for DARTS in tests/test_darts_search.py), the CLI from search to retraining and export, the Python
API, bad spaces and arguments of the other space (exit 2). Tiny supernets (C=4, N=1 / 3 cells) keep
the file to a few seconds of work per test.
"""

from __future__ import annotations

import json
import random

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from typer.testing import CliRunner

from _helpers import (
    RecordRank,
    StopAfter,
    assert_clean_failure,
    exact_unrolled_gradient,
    make_trainer,
    run_dir_of,
    same,
    search_args,
    smooth_,
    snapshot,
    tiny_batches,
)
from lightning_dlstrat import export
from lightning_dlstrat.cli import app
from lightning_dlstrat.config import resolve
from lightning_dlstrat.data import DigitsDataModule
from lightning_dlstrat.hub import HubError
from lightning_dlstrat.recipes import fit, get_recipe
from lightning_dlstrat.spaces import SPACES, NB201Space, get_space
from lightning_dlstrat.spaces.nb201 import ALL_SKIP, BEST_CIFAR100, FastNB201SearchNetwork, NB201Genotype, NB201GenotypeError, NB201SearchNetwork
from lightning_dlstrat.trainers.darts_search import DARTSSearch

TINY = search_args("nb201")  # in_shape=(1, 8, 8), num_classes=10, space="nb201", C=4, N=1
runner = CliRunner()
KNOWN = ", ".join(SPACES)  # what an unknown space's error lists


# --- the module -----------------------------------------------------------------------------------
def test_nb201_module_builds_the_benchmark_supernet():
    module = DARTSSearch(**TINY, implementation="reference")
    assert type(module.net) is NB201SearchNetwork and module.space.name == "nb201"
    assert isinstance(DARTSSearch(**TINY).net, FastNB201SearchNetwork)
    assert [tuple(a.shape) for a in module.net.arch_parameters()] == [(6, 5)]
    assert isinstance(module.genotype(), NB201Genotype)
    assert DARTSSearch(**{**TINY, "space": "NAS-Bench-201"}).hparams.space == "nb201"  # the canonical name is kept
    w_opt, a_opt = DARTSSearch(**TINY, nesterov=True).make_optimizers()
    assert w_opt.param_groups[0]["nesterov"] and not DARTSSearch(**TINY).make_optimizers()[0].param_groups[0]["nesterov"]
    sub = DARTSSearch(**TINY, primitives=["skip_connect", "nor_conv_3x3"])
    assert sub.net.operations == ("skip_connect", "nor_conv_3x3") and sub.net.alpha.shape == (6, 2)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"space": "nb101"}, f"unknown search space 'nb101'; choose from: {KNOWN}"),
        ({"partial_channels": 4}, "partial_channels=4 is an argument of the darts space's supernet (partial channels, PC-DARTS"),
        ({"layers": 5}, "layers=5 is an argument of the darts space's supernet; the nb201 supernet reads C, N, primitives"),
        ({"in_shape": (1, 3, 3)}, "a 3x3 input is too small"),
        ({"primitives": ["sep_conv_3x3"]}, "operations must be distinct NAS-Bench-201 operations"),
        ({"nesterov": True, "momentum": 0.0}, "nesterov=True needs momentum > 0"),
    ],
)
def test_bad_arguments_are_refused_with_what_to_change(kwargs, message):
    with pytest.raises(ValueError) as info:
        DARTSSearch(**{**TINY, **kwargs})
    assert message in str(info.value)
    with pytest.raises(ValueError, match="N=2 is an argument of the nb201 space's supernet"):
        DARTSSearch(in_shape=(1, 8, 8), C=4, layers=3, N=2)  # and the other way round


def test_second_order_matches_double_backward_in_nb201():
    # as tests/test_darts_search.py's DARTS test: a smooth reference supernet (Softplus for ReLU),
    # lr 0.5 so the second-order term is as large as the first-order part, float64. Measured
    # error of the central differences at the default radius, relative to the second-order term:
    # 3.5e-3 / 5.3e-4 / 7.1e-4 (seeds 0 / 1 / 2), falling exactly 100x per 10x smaller radius
    # (O(eps^2): the function is smooth); the copied bugs are ~100 % off. Tolerance 1e-2.
    torch.manual_seed(0)
    module = DARTSSearch(**{**TINY, "in_shape": (1, 6, 6), "num_classes": 3}, order=2, lr=0.5, implementation="reference").double()
    smooth_(module.net)
    w_opt, a_opt = module.make_optimizers()
    train, val = tiny_batches(n=4, size=6, classes=3, dtype=torch.float64)
    module.search_step(train, val, w_opt, a_opt, update_arch=False)  # fills the momentum buffers
    (total,), (direct,) = exact_unrolled_gradient(module, train, val, w_opt)
    (got,) = module.architecture_gradient(train, val, w_opt)
    module.hparams.fd_radius = 1e-3
    (finer,) = module.architecture_gradient(train, val, w_opt)
    implicit = torch.linalg.vector_norm(total - direct)
    assert implicit > 0.2 * torch.linalg.vector_norm(direct)
    err, err_finer = torch.linalg.vector_norm(got - total), torch.linalg.vector_norm(finer - total)
    assert err <= 1e-2 * implicit and err_finer <= err / 30
    # first order: the plain gradient of the validation loss at the current weights
    module.hparams.order = 1
    (first,) = module.architecture_gradient(train, val, w_opt)
    (expected,) = torch.autograd.grad(module.loss(module.net(val[0]), val[1]), module.net.arch_parameters())
    torch.testing.assert_close(first, expected, rtol=1e-10, atol=1e-12)


def test_alpha_identical_across_ddp_ranks(tmp_path, space):
    L.seed_everything(0)
    dm = DigitsDataModule(bilevel=True, batch_size=16)
    module = DARTSSearch(**search_args(space.name), order=2)
    make_trainer(tmp_path, devices=2, strategy="ddp_spawn", limit_val_batches=0, callbacks=[RecordRank(str(tmp_path))]).fit(module, datamodule=dm)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert not torch.equal(r0["first"], r1["first"])  # the ranks trained on different data ...
    assert same(r0["start"], r1["start"])
    assert not same(r0["end"], r0["start"])  # ... alpha moved ...
    assert same(r0["end"], r1["end"])  # ... identically on both


def test_bf16_mixed_on_cpu(tmp_path, space):
    L.seed_everything(0)
    dm = DigitsDataModule(bilevel=True, batch_size=16)
    module = DARTSSearch(**search_args(space.name), order=2)
    a0 = snapshot(module.net.arch_parameters())
    trainer = make_trainer(tmp_path, precision="bf16-mixed", limit_train_batches=2)
    trainer.fit(module, datamodule=dm)
    alphas = module.net.arch_parameters()
    assert len(alphas) == len(space.cell_types) and not same(alphas, a0)
    assert all(a.dtype == torch.float32 and torch.isfinite(a).all() for a in alphas)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert isinstance(module.genotype(), space.genotype_class)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 loss scaling needs CUDA")
def test_fp16_mixed_on_gpu(tmp_path, space):
    L.seed_everything(0)
    dm = DigitsDataModule(bilevel=True, batch_size=16)
    module = DARTSSearch(**search_args(space.name), order=2)
    a0 = snapshot(module.net.arch_parameters())
    trainer = make_trainer(tmp_path, accelerator="gpu", precision="16-mixed", limit_train_batches=4)
    trainer.fit(module, datamodule=dm)
    assert trainer.precision_plugin.scaler is not None
    alphas = [a.detach().cpu() for a in module.net.arch_parameters()]
    assert all(a.dtype == torch.float32 and torch.isfinite(a).all() for a in alphas) and not same(alphas, a0)


def search(tmp_path, space: str, stop_after: int | None = None, ckpt_path=None) -> DARTSSearch:
    """A 3-epoch second-order search in ``space`` (the cosine schedule spans 3 epochs; epoch 0 is warm-up), optionally interrupted."""
    L.seed_everything(0)
    dm = DigitsDataModule(bilevel=True, batch_size=16)
    module = DARTSSearch(**search_args(space), order=2, nesterov=True, warmup_epochs=1)
    callbacks = [ModelCheckpoint(dirpath=tmp_path, save_last=True)] + ([StopAfter(stop_after)] if stop_after else [])
    make_trainer(tmp_path, max_epochs=3, enable_checkpointing=True, callbacks=callbacks).fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module


def test_resume_gives_the_same_search(tmp_path, space):
    straight = search(tmp_path / "straight", space.name)
    search(tmp_path / "resumed", space.name, stop_after=2)
    resumed = search(tmp_path / "resumed", space.name, ckpt_path=tmp_path / "resumed" / "last.ckpt")
    assert str(resumed.genotype()) == str(straight.genotype())
    assert same(resumed.net.arch_parameters(), straight.net.arch_parameters())
    assert same(resumed.net.weight_parameters(), straight.net.weight_parameters())
    # the history travels in the checkpoint; epoch 0 was warm-up, so alpha stayed at its start
    assert [r["genotype"] for r in resumed.history] == [r["genotype"] for r in straight.history] and len(straight.history) == 3
    first = f"alpha_{space.cell_types[0]}"
    assert straight.history[0][first] != straight.history[1][first]
    # the checkpoint loads without unpickling arbitrary objects, with both optimisers and the schedule
    ckpt = torch.load(tmp_path / "resumed" / "last.ckpt", weights_only=True)
    assert set(ckpt["optimizer_states"][0]["state"]) and len(ckpt["optimizer_states"]) == 2 and ckpt["lr_schedulers"]


# --- the CLI: search, retrain, export -------------------------------------------------------------
def test_cli_nb201_search_retrains_with_nb201_net_and_exports(tmp_path):
    limits = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]
    result = runner.invoke(app, ["fit", "--model", "darts", "--model.space=nb201", "--max-epochs", "1", "--model.C=4", "--out", str(tmp_path / "search"), *limits])
    assert result.exit_code == 0, result.output
    search_dir = run_dir_of(result.output)
    genotype = NB201Genotype.load(search_dir / "genotype.json")
    assert json.loads((search_dir / "genotype.json").read_text())["arch_str"] == str(genotype)
    summary = json.loads((search_dir / "summary.json").read_text())
    assert summary["genotype"] == str(genotype) and summary["space"] == "nb201" and "test/acc" in summary["test_metrics"]
    assert f"retrain with: dlstrat fit --model nb201-net --genotype {search_dir / 'genotype.json'}" in result.output
    (record,) = [json.loads(line) for line in (search_dir / "genotype_history.jsonl").read_text().splitlines()]
    assert record["genotype"] == str(genotype) and record["space"] == "nb201" and record["primitives"] == list(NB201Space().operations)
    assert len(record["alpha_cell"]) == 6 and abs(sum(record["alpha_cell"][0]) - 1) < 1e-5
    header = (search_dir / "metrics.csv").read_text().splitlines()[0]
    assert all(k in header for k in ("alpha/cell/e5/avg_pool_3x3", "alpha/cell_entropy", "arch/cell_skips"))
    for picture in ("alpha.png", "genotype.png"):
        assert (search_dir / picture).read_bytes()[:4] == b"\x89PNG"
    config = (search_dir / "config.yaml").read_text()  # the nb201 digits preset, not the DARTS one
    assert "space: nb201" in config and "nesterov: true" in config and "N: 1" in config and "weight_decay: 0.0005" in config

    retrain = runner.invoke(app, ["fit", "--model", "nb201-net", "--genotype", str(search_dir), "--max-epochs", "1", "--out", str(tmp_path / "net"), *limits])
    assert retrain.exit_code == 0, retrain.output
    net_dir = run_dir_of(retrain.output)
    net_summary = json.loads((net_dir / "summary.json").read_text())
    assert net_summary["genotype"] == str(genotype) and net_summary["made_from"]["search_run"] == str(search_dir.resolve())
    folder = export.export_run(net_dir, tmp_path / "cell")
    card = (folder / "README.md").read_text()
    assert (folder / "search_summary.json").is_file() and (folder / "alpha.png").is_file()
    assert "DARTS architecture search in the nb201 space on digits" in card and str(genotype) in card
    with pytest.raises(HubError, match="retrain its genotype with `dlstrat fit --model nb201-net --genotype"):
        export.export_run(search_dir, tmp_path / "no")
    wrong = runner.invoke(app, ["fit", "--model", "darts-net", "--genotype", str(search_dir), "--out", str(tmp_path / "wrong")])
    assert_clean_failure(wrong, "It is a genotype of the nb201 space: train it with --model nb201-net.", tmp_path / "wrong")


def test_bad_space_exits_2_and_leaves_nothing(tmp_path):
    out = tmp_path / "runs"
    result = runner.invoke(app, ["fit", "--model", "darts", "--model.space=nb101", "--out", str(out)])
    assert_clean_failure(result, f"--model.space: unknown search space 'nb101'; choose from: {KNOWN}", out)
    result = runner.invoke(app, ["fit", "--model", "darts", "--model.space=nb201", "--model.partial_channels=4", "--out", str(out)])
    assert_clean_failure(result, "partial channels, PC-DARTS, are built into the DARTS supernet only", out)


def test_python_api_search_in_nb201(tmp_path):
    summary = fit("darts", model={"space": "nb201", "C": 4}, trainer={"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                  "limit_test_batches": 1, "enable_progress_bar": False}, out=str(tmp_path))
    genotype = NB201Genotype.parse(summary["genotype"])
    assert summary["space"] == "nb201" and genotype == get_space("nb201").resolve_genotype(summary["run_dir"])


def test_presets_follow_the_space():
    darts = get_recipe("darts")
    digits = resolve(darts, flags={"model": {"space": "nb201"}})
    assert {k: digits.model_args[k] for k in ("C", "N", "order", "arch_lr", "weight_decay", "nesterov")} == dict(C=8, N=1, order=1, arch_lr=0.03, weight_decay=5e-4, nesterov=True)
    assert digits.data_args["batch_size"] == 32 and digits.trainer["max_epochs"] == 15 and digits.model_args["layers"] == 8
    cifar = resolve(darts, flags={"model": {"space": "nb201"}, "data": {"name": "cifar10"}})  # the benchmark's search
    assert {k: cifar.model_args[k] for k in ("C", "N", "order", "lr", "lr_min", "momentum", "nesterov", "weight_decay", "grad_clip")} == dict(
        C=16, N=5, order=2, lr=0.025, lr_min=0.001, momentum=0.9, nesterov=True, weight_decay=5e-4, grad_clip=5.0)
    assert (cifar.model_args["arch_lr"], list(cifar.model_args["arch_betas"]), cifar.model_args["arch_weight_decay"]) == (3e-4, [0.5, 0.999], 1e-3)
    assert cifar.data_args["batch_size"] == 64 and cifar.data_args["bilevel"] and cifar.trainer == {"max_epochs": 50}
    plain = resolve(darts)  # the DARTS presets stay as they were
    assert (plain.model_args["space"], plain.model_args["layers"], plain.model_args["weight_decay"], plain.model_args["nesterov"]) == ("darts", 5, 3e-4, False)


DIGITS_HARD_METHOD = {"darts": "beta-darts", "nb201": "drnas"}  # docs/darts.md, "Search vs random search on digits-hard"


def test_digits_hard_presets_are_digits_with_the_method_the_comparison_chose(space):
    """What docs/darts.md's digits-hard comparison supports (beta-DARTS in the DARTS space, DrNAS in
    NAS-Bench-201), plain DARTS on digits; everything else as digits but for the method's own recipe
    (darts.yaml's methods table). An explicit --model.method wins."""
    from lightning_dlstrat.methods import METHODS

    method = DIGITS_HARD_METHOD[space.name]
    darts = get_recipe("darts")
    hard = resolve(darts, flags={"model": {"space": space.name}, "data": {"name": "digits-hard"}})
    digits = resolve(darts, flags={"model": {"space": space.name}})
    assert hard.model_args["method"] == method and digits.model_args["method"] in (None, "darts")
    recipe = darts.presets["methods"][method][space.name]["datasets"]["digits-hard"]["model"]  # e.g. nb201: weight decay 3e-4, no Nesterov
    assert all(hard.model_args[k] == v for k, v in recipe.items())
    assert all(hard.model_args[k] == v for k, v in METHODS[method].preset.items() if k not in recipe)  # the method's defining settings, expanded
    same_keys = lambda args: {k: v for k, v in args.items() if k not in ("method", "in_shape", *recipe, *METHODS[method].preset)}  # noqa: E731
    assert same_keys(hard.model_args) == same_keys(digits.model_args)
    assert hard.model_args["in_shape"] == [1, 16, 16] and hard.trainer == digits.trainer
    assert {k: v for k, v in hard.data_args.items()} == digits.data_args
    assert resolve(darts, flags={"model": {"space": space.name, "method": "darts"}, "data": {"name": "digits-hard"}}).model_args["method"] == "darts"
    module = DARTSSearch(**hard.model_args)  # what config.yaml holds is what the module runs
    assert all(getattr(module.hparams, k) == v for k, v in recipe.items())


# --- the interface a sampler uses, and genotype files ----------------------------------------------
def test_choices_describe_the_space_for_a_sampler(space, space_case):
    options = space.choices()
    assert all(isinstance(v, str) for opts in options.values() for v in opts)  # what Optuna's suggest_categorical takes
    rng = random.Random(0)
    for _ in range(20):
        g = space.sample(rng)
        assert space.from_choices(space.to_choices(g)) == g  # every sample is a point of the decisions
        picked = {name: rng.choice(opts) for name, opts in options.items()}
        assert space.to_choices(space.from_choices(picked)) == picked
    size = 1
    for opts in options.values():
        size *= len(opts)
    assert size == space_case.size
    with pytest.raises(ValueError, match="missing"):
        space.from_choices({})
    bad = dict(picked)
    bad[next(iter(bad))] = "conv_9x9"
    with pytest.raises(ValueError, match="is not one of"):
        space.from_choices(bad)


def test_what_a_search_logs_and_draws_comes_from_the_space(space, space_case, tmp_path):
    net = space.search_supernet("fast", (1, 8, 8), 10, **space_case.search)
    weights = space.cell_weights(net)
    assert list(weights) == list(space.cell_types) and all(w.shape == (space.topology.num_edges, len(net.operations)) for w in weights.values())
    kept = space.chosen_ops(net.genotype())
    assert list(kept) == list(space.cell_types) and all(op in space.operations for ops in kept.values() for op in ops)
    space.plot_alpha(weights, net.operations, tmp_path / "alpha.png")
    assert (tmp_path / "alpha.png").read_bytes()[:4] == b"\x89PNG"
    net.genotype().save(tmp_path / "genotype.json")
    assert space.resolve_genotype(str(tmp_path)) == net.genotype()


def test_nb201_genotype_files_and_resolve(tmp_path):
    path = tmp_path / "genotype.json"
    BEST_CIFAR100.save(path)
    assert NB201Genotype.load(path) == BEST_CIFAR100 and NB201Genotype.resolve(str(tmp_path)) == BEST_CIFAR100
    assert json.loads(path.read_text()) == {"arch_str": str(BEST_CIFAR100), **BEST_CIFAR100.to_dict()}
    with pytest.raises(NB201GenotypeError, match="describe different cells"):
        NB201Genotype.from_dict({"arch_str": str(ALL_SKIP), **BEST_CIFAR100.to_dict()})
    run = tmp_path / "nb201-net-run"  # an nb201-net run directory: genotype.txt
    run.mkdir()
    (run / "genotype.txt").write_text(str(ALL_SKIP) + "\n")
    assert NB201Genotype.resolve(str(run)) == ALL_SKIP and NB201Genotype.resolve(" " + str(ALL_SKIP)) == ALL_SKIP
    with pytest.raises(NB201GenotypeError, match="does not exist"):
        NB201Genotype.resolve(str(tmp_path / "missing.json"))
    for text in ("DARTS_V2", "g" * 300):  # a name, and one too long for a file name
        with pytest.raises(NB201GenotypeError, match="neither a NAS-Bench-201 architecture string"):
            NB201Genotype.resolve(text)
    (tmp_path / "big.json").write_text(" " * 5000)
    with pytest.raises(NB201GenotypeError, match="larger than"):
        NB201Genotype.load(tmp_path / "big.json")
