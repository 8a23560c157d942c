"""Each search method against its authors' official code: a transcription of the official formula or
rule, written here from the cited file (repository @ commit, path, lines), compared in float64 with
what ``--model.method=NAME`` computes. The notes behind them: docs/darts.md, "Fidelity"."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_dlstrat.methods import selectable
from lightning_dlstrat.methods.darts_es import DARTSES
from lightning_dlstrat.methods.sdarts import clip_rows
from lightning_dlstrat.trainers.darts_search import DARTSSearch

TINY = dict(in_shape=(1, 8, 8), num_classes=10, C=4, layers=3, steps=2, multiplier=2)
FULL_CELL = dict(in_shape=(1, 8, 8), num_classes=10, C=4, layers=3, steps=4, multiplier=4)
NB201 = dict(in_shape=(1, 8, 8), num_classes=10, C=4, N=1, space="nb201")


# --- SDARTS-RS ----------------------------------------------------------------------------------------
def official_sdarts_clip(rows: torch.Tensor) -> torch.Tensor:
    """xiangning-chen/SmoothDARTS @ d3dbfed, sota/cnn/model_search.py L170-177 (``clip``), row by row."""
    out = []
    for r in rows.tolist():
        m = max(range(len(r)), key=lambda i: r[i])  # the argmax before the clamp (first on ties)
        r = [min(max(v, 0.0), 1.0) for v in r]
        if sum(r) == 0:
            r[m] = 1.0
        s = sum(r)
        out.append([v / s for v in r])
    return torch.tensor(out, dtype=torch.float64)


def test_sdarts_clip_is_the_official_clamp_and_renormalisation():
    g = torch.Generator().manual_seed(0)
    w = F.softmax(torch.randn(14, 8, generator=g, dtype=torch.float64), -1)
    noisy = w + (2 * torch.rand(14, 8, generator=g, dtype=torch.float64) - 1) * 0.3  # U(-eps, eps), attacker/perturb.py L47-50
    noisy[3] = -torch.rand(8, generator=g, dtype=torch.float64)  # an all-negative row: it becomes one-hot at its argmax
    noisy[5, 2] = 1.7  # above 1: clamped
    ours = clip_rows(noisy)
    assert torch.allclose(ours, official_sdarts_clip(noisy), atol=1e-15)
    assert torch.allclose(ours.sum(-1), torch.ones(14, dtype=torch.float64))  # rows on the simplex (they summed to 0.96-1.53 before)
    assert torch.equal(ours[3], F.one_hot(noisy[3].argmax(), 8).double())


def test_sdarts_epsilon_schedule_is_the_official_one():
    """train_search.py L169-171: eps_t = 0.03 + (0.3 - 0.03) * t / E, so 0.2946 at t = 49 of 50."""
    module = DARTSSearch(**TINY, method="sdarts-rs")
    sdarts = module.method("sdarts-rs")
    for t in (0, 1, 25, 49):
        module.epoch_start(t, 50)
        assert sdarts.epsilon == pytest.approx(0.03 + (0.3 - 0.03) * t / 50, abs=1e-15)
    assert sdarts.epsilon == pytest.approx(0.2946)


# --- Fair DARTS ----------------------------------------------------------------------------------------
FAIR_OPS = ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]  # fairdarts/genotypes.py L8-16


def official_threshold_sparse(weights: torch.Tensor, steps: int, threshold: float = 0.85) -> list[tuple[str, int, int]]:
    """xiaomi-automl/FairDARTS @ 270cfc9, fairdarts/utils.py L143-189: per node the top-2 edges by
    their largest sigmoid, each emitted as (op, node, input) only if that sigmoid >= threshold."""
    gene, start = [], 0
    for i in range(steps):
        rows = weights[start : start + i + 2].tolist()
        edges = sorted(range(i + 2), key=lambda j: -max(rows[j]))[:2]
        for j in edges:
            k = max(range(len(rows[j])), key=lambda o: rows[j][o])
            if rows[j][k] >= threshold:
                gene.append((FAIR_OPS[k], i + 2, j))
        start += i + 2
    return gene


def test_fair_darts_threshold_genotype_equals_the_official_parser():
    torch.manual_seed(0)
    module = DARTSSearch(**FULL_CELL, method="fair-darts").double()
    ops = list(module.net.operations)
    keep = [ops.index(op) for op in FAIR_OPS]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for a in (module.net.alphas_normal, module.net.alphas_reduce):
            a.copy_(torch.randn(a.shape, generator=g, dtype=torch.float64) * 2.5)  # some edges confident, some not
    genotype = module.genotype()
    for cell in ("normal", "reduce"):
        sig = torch.sigmoid(getattr(module.net, f"alphas_{cell}")[:, keep].detach())  # the official 7-op weights (E, 7)
        official = official_threshold_sparse(sig, steps=4)
        ours = [(op, k // 2 + 2, j) for k, (op, j) in enumerate(getattr(genotype, cell)) if op != "none"]
        assert sorted(ours) == sorted(official), cell
    # sparse: on this alpha some node keeps fewer than 2 edges (dropped edges are written ('none', j))
    assert any(op == "none" for op, _ in genotype.normal + genotype.reduce)


def test_fair_darts_zero_one_loss_is_the_official_mean_over_the_seven_ops():
    """separate_loss.py L14-17 with architect.py L22: w01 * -mean((sigmoid(alpha) - 0.5)^2) over
    cat[sigmoid(alpha_normal), sigmoid(alpha_reduce)], 2 x 14 x 7 = 196 entries, w01 = 10."""
    module = DARTSSearch(**FULL_CELL, method="fair-darts").double()
    ops = list(module.net.operations)
    keep = [ops.index(op) for op in FAIR_OPS]
    with torch.no_grad():
        for a in module.net.arch_parameters():
            a.normal_(0, 1)
    official = torch.cat([torch.sigmoid(module.net.alphas_normal[:, keep]), torch.sigmoid(module.net.alphas_reduce[:, keep])])
    assert official.numel() == 196
    expected = 10 * -F.mse_loss(official, torch.full_like(official, 0.5), reduction="mean")
    assert torch.allclose(module.arch_regulariser(), expected, atol=1e-15)


# --- DrNAS --------------------------------------------------------------------------------------------
def test_drnas_reg_types_are_the_official_ones():
    """xiangning-chen/DrNAS @ f2caa4d, architect.py L17-22 and DARTS-space/model_search.py L193-209:
    l2 (the default): Adam weight_decay = reg_scale 1e-3, no KL; kl: weight_decay 0, plus
    reg_scale * sum over edges of KL(Dir(ELU(alpha) + 1) || Dir(1))."""
    torch.manual_seed(0)
    l2 = DARTSSearch(**TINY, method="drnas").double()
    kl = DARTSSearch(**TINY, method="drnas", dirichlet_reg="kl").double()
    assert l2.hparams.dirichlet_reg == "l2" and kl.hparams.dirichlet_reg == "kl"
    assert l2.make_optimizers()[1].param_groups[0]["weight_decay"] == 1e-3 and l2.arch_regulariser() is None
    assert kl.make_optimizers()[1].param_groups[0]["weight_decay"] == 0.0
    with torch.no_grad():
        for a in kl.net.arch_parameters():
            a.normal_(0, 1)
    official = 0.0
    for alpha in (kl.net.alphas_normal, kl.net.alphas_reduce):
        for row in alpha:  # one Dirichlet per edge, summed
            beta = F.elu(row) + 1
            official = official + torch.distributions.kl_divergence(torch.distributions.Dirichlet(beta), torch.distributions.Dirichlet(torch.ones_like(beta)))
    assert torch.allclose(kl.arch_regulariser(), 1e-3 * official, atol=1e-12)


# --- beta-DARTS ---------------------------------------------------------------------------------------
def test_beta_darts_term_and_schedule_are_the_official_ones():
    """Sunshine-Ye/Beta-DARTS @ f307704, optimizers/darts/architect.py L55-59 and L80-85: in the
    first-order step only, L_val + (0 + 50 * epoch / 100) * mean_edges logsumexp(alpha)."""
    torch.manual_seed(0)
    module = DARTSSearch(**NB201, order=1, method="beta-darts").double()
    alpha = module.net.alpha
    for epoch, epochs in ((0, 100), (1, 100), (99, 100), (7, 15)):
        module.method("beta-darts").weight  # noqa: B018  (the schedule is the module's own epoch)
        official = (0 + 50 * epoch / 100) * torch.logsumexp(alpha, dim=-1).mean()
        ours = module.method("beta-darts").regulariser(alpha, epoch, epochs)
        assert (ours is None and epoch == 0) or torch.allclose(ours, official, atol=1e-15)
    assert (0 + 50 * 99 / 100) == pytest.approx(49.5)  # where the official 100-epoch search ends
    unrolled = DARTSSearch(**NB201, order=2, method="beta-darts")
    assert unrolled.method("beta-darts").regulariser(unrolled.net.alpha, 10, 100) is None  # _backward_step_unrolled has no term
    forced = DARTSSearch(**NB201, order=2, method="beta-darts", beta_decay_unrolled=True)
    assert forced.method("beta-darts").regulariser(forced.net.alpha, 10, 100) is not None  # the deliberate option


# --- DARTS-ES (R-DARTS) -----------------------------------------------------------------------------
class OfficialEVLocalAvg:
    """automl/RobustDARTS @ 3dec3fe, src/utils.py L31-141 (``EVLocalAvg``), transcribed: window 5,
    evaluations every ``freq`` epochs, local averages from the third evaluation on, dated at the
    centre of their window; an early stop compares the newest with the one ``delta`` back."""

    def __init__(self, window=5, freq=2, total_epochs=50, es_start=10, delta=4, factor=1.3):
        self.window, self.freq, self.total, self.es_start, self.delta, self.factor = window, freq, total_epochs, es_start, delta, factor
        self.ev, self.la, self.la_epochs = [], [], {}

    def update(self, epoch, ev):
        self.ev.append(ev)
        n = len(self.ev)
        if n >= 3 and epoch < self.total - 1:
            values = self.ev if n < self.window else self.ev[n - self.window :]
            self.la.append(sum(values) / len(values))
            self.la_epochs[epoch] = epoch - self.freq * (self.window // 2)

    def early_stop(self, epoch):
        if epoch not in self.la_epochs or self.la_epochs[epoch] - self.freq * self.delta < self.es_start:
            return None
        cur, prev = self.la[-1], self.la[-1 - self.delta]
        if cur / prev > self.factor:
            return self.la_epochs[epoch] - self.freq * self.delta  # stop_epoch
        return None


def first_stop_official(values_at):
    es = OfficialEVLocalAvg()
    for epoch in [*range(0, 50, 2), 49]:  # --report_freq_hessian 2, and the last epoch
        es.update(epoch, values_at(epoch))
        if epoch != 49:
            back = es.early_stop(epoch)
            if back is not None:
                return epoch, back
    return None


def first_stop_ours(values_at):
    hp = dict(eigen_every=2, eigen_stop_window=5, eigen_stop_delta=4, eigen_stop_start=10, eigen_stop_factor=1.3)
    rule, evaluated = DARTSES(hp), []
    for epoch in range(50):
        if epoch % 2 and epoch != 49:  # the search module's monitor schedule (tests/test_darts_search.py runs it)
            continue
        evaluated.append({"epoch": epoch, "eigenvalue": values_at(epoch)})
        stop = rule.decide(evaluated, last_epoch=49)
        if stop is not None:
            return epoch, stop["epoch"]
    return None


@pytest.mark.parametrize(
    "name, values_at, expected",
    [
        ("step jump", lambda t: 1.0 if t < 10 else 3.0, (22, 10)),
        ("steady 8% growth per evaluation", lambda t: 1.08 ** (t / 2), (22, 10)),
        ("late growth", lambda t: 1.0 if t <= 30 else 1.1 ** ((t - 30) // 2), (40, 28)),
        ("flat", lambda t: 1.0, None),
    ],
)
def test_darts_es_stops_and_rolls_back_where_robustdarts_does(name, values_at, expected):
    assert first_stop_official(values_at) == expected  # the transcription gives the hand-worked epochs
    assert first_stop_ours(values_at) == expected


# --- GDAS ---------------------------------------------------------------------------------------------
def official_gdas_nasnet_genotype(weights: torch.Tensor, ops: list[str], steps: int) -> list[tuple[str, int]]:
    """D-X-Y/AutoDL-Projects @ f46486e, xautodl/models/cell_searchs/search_model_gdas_nasnet.py
    L128-161: per node, every (op, input) over all incoming edges and ops but none, by weight; the top 2."""
    gene, start = [], 0
    for i in range(steps):
        edges = []
        for j in range(i + 2):
            for k, op in enumerate(ops):
                if op != "none":
                    edges.append((op, j, float(weights[start + j, k])))
        edges = sorted(edges, key=lambda x: -x[-1])[:2]
        gene += [(op, j) for op, j, _ in edges]
        start += i + 2
    return gene


def test_gdas_genotype_takes_the_top_two_op_edge_pairs():
    torch.manual_seed(0)
    module = DARTSSearch(**FULL_CELL, method="gdas")
    ops = list(module.net.operations)
    with torch.no_grad():
        module.net.alphas_normal.normal_(0, 1)
        module.net.alphas_normal[0, ops.index("sep_conv_3x3")] = 9.0  # node 0, input 0: two strong ops on one edge
        module.net.alphas_normal[0, ops.index("dil_conv_5x5")] = 8.0
        module.net.alphas_normal[1] = 0.0  # node 0, input 1: uniform, 1/8 each, below both
        module.net.alphas_reduce.normal_(0, 1)
    genotype = module.genotype()
    for cell in ("normal", "reduce"):
        w = F.softmax(getattr(module.net, f"alphas_{cell}").detach().double(), -1)
        assert list(getattr(genotype, cell)) == official_gdas_nasnet_genotype(w, ops, 4)
    assert genotype.normal[:2] == (("sep_conv_3x3", 0), ("dil_conv_5x5", 0))  # two ops may share an edge


def test_gdas_forward_value_and_gradient_equal_the_sampled_op_only():
    """search_cells.py L180-181 (``forward_gdas``): out = op_index(x) * h[index], h = onehot - sg(p) + p,
    p = softmax((log_softmax(alpha) + g) / tau): the value is the sampled op's output and alpha's
    gradient flows through p[index] alone."""
    torch.manual_seed(0)
    module = DARTSSearch(**TINY, method="gdas").double()
    gdas = module.method("gdas")
    gdas.tau = 2.0
    alpha = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    outputs = torch.randn(5, 8, 3, dtype=torch.float64)  # each (edge, op)'s output, 3 numbers
    ours_w = gdas.mix(alpha, True, seed=11)
    ours = (ours_w[..., None] * outputs).sum(1)  # the mixed op: sum_o w_o op_o(x)
    # the official path with the same Gumbel draw (the one our sample took: recovered from its argmax and p)
    g = torch.Generator(device="cpu").manual_seed(11)
    u = torch.rand(alpha.shape, generator=g, dtype=alpha.dtype)
    gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7)))
    p = F.softmax((F.log_softmax(alpha, -1) + gumbel) / 2.0, -1)
    index = p.argmax(-1)
    h = F.one_hot(index, 8).double() - p.detach() + p
    official = torch.stack([outputs[e, index[e]] * h[e, index[e]] for e in range(5)])
    assert torch.allclose(ours, official, atol=1e-15)
    r = torch.randn(5, 3, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad((ours * r).sum(), alpha)
    (g_official,) = torch.autograd.grad((official * r).sum(), alpha)
    assert torch.allclose(g_ours, g_official, atol=1e-14)


def test_gdas_takes_the_weight_step_before_the_architecture_step():
    """exps/NAS-Bench-201-algos/GDAS.py L40-69: (a) the weight step, then (b) the architecture step."""
    torch.manual_seed(0)
    module = DARTSSearch(**TINY, order=1, method="gdas")
    order = []
    module._weight_step = lambda train, w_opt: order.append("weights") or (torch.zeros(()), torch.zeros(2, 10))
    module._architecture_step = lambda train, val, w_opt, a_opt: order.append("arch")
    batch = (torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))
    module.search_step(batch, batch, *module.make_optimizers())
    assert order == ["weights", "arch"]
    plain = DARTSSearch(**TINY, order=1)
    order.clear()
    plain._weight_step = module._weight_step
    plain._architecture_step = module._architecture_step
    plain.search_step(batch, batch, *plain.make_optimizers())
    assert order == ["arch", "weights"]  # DARTS's order


# --- DARTS- and the presets ----------------------------------------------------------------------------
def test_darts_minus_beta_is_the_official_linear_decay():
    """Meituan-AutoML/DARTS- @ adb81a8, src/utils.py L171-192 (DecayScheduler, linear, T_max 50):
    beta_t = 1 - t / 50 at the start of epoch t (0.02 at the last epoch, never 0 in the search)."""
    module = DARTSSearch(**TINY, method="darts-")
    for t in (0, 10, 49):
        module.epoch_start(t, 50)
        assert module.method("darts-").beta == pytest.approx(1 - t / 50)


@pytest.mark.parametrize(
    "method, space, expected",
    [
        ("pc-darts", "darts", dict(order=1, lr=0.1, lr_min=0.0, arch_lr=6e-4, warmup_epochs=15, partial_channels=4, batch_size=256, max_epochs=50)),
        ("fair-darts", "darts", dict(order=1, lr=0.005, arch_lr=3e-3, arch_betas=[0.9, 0.999], batch_size=128, relaxation="sigmoid", fair_threshold=0.85)),
        ("gdas", "darts", dict(order=1, max_epochs=250, batch_size=256, weight_decay=5e-4, relaxation="gumbel")),
        ("gdas", "nb201", dict(order=1, max_epochs=250, nesterov=True, weight_decay=5e-4)),
        ("drnas", "darts", dict(order=1, lr=0.1, lr_min=0.0, arch_lr=6e-4, warmup_epochs=10, dirichlet_reg="l2")),
        ("drnas", "nb201", dict(order=1, max_epochs=100, weight_decay=3e-4, nesterov=False)),
        ("beta-darts", "nb201", dict(order=1, max_epochs=100, weight_decay=3e-4, beta_decay=0.5)),
        ("sdarts-rs", "nb201", dict(order=1, max_epochs=100, weight_decay=3e-4)),
        ("darts", "darts", dict(order=2, max_epochs=50, lr=0.025, arch_lr=3e-4)),
    ],
)
def test_print_config_shows_the_papers_recipe(method, space, expected):
    """`dlstrat fit --model darts --model.method=NAME --data cifar10 --print-config`: the paper's settings."""
    import yaml
    from typer.testing import CliRunner

    from lightning_dlstrat.cli import app

    result = CliRunner().invoke(app, ["fit", "--model", "darts", f"--model.method={method}", f"--model.space={space}", "--data", "cifar10", "--print-config"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.output)
    flat = {**config["model"], **config["data"], **config["trainer"]}
    for key, value in expected.items():
        assert flat[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    assert math.isfinite(flat["lr"])


@pytest.mark.slow
@pytest.mark.parametrize("space", ["darts", "nb201"])
@pytest.mark.parametrize("data", ["digits", "digits-hard"])
def test_every_method_searches_the_embedded_data_at_digits_size(space, data):
    """On the embedded data every method keeps the space's digits search length (its digits-sized
    variant replaces the paper's recipe): a paper's 50 or 250 CIFAR epochs must not leak into it."""
    from lightning_dlstrat.config import resolve
    from lightning_dlstrat.recipes import get_recipe

    recipe = get_recipe("darts")
    plain = resolve(recipe, flags={"model": {"name": "darts", "space": space}, "data": {"name": data}})
    for method in selectable():
        if method == "pc-darts" and space == "nb201":
            continue  # partial channels exist in the DARTS supernet only (refused with a clear message)
        cfg = resolve(recipe, flags={"model": {"name": "darts", "space": space, "method": method}, "data": {"name": data}})
        assert cfg.trainer["max_epochs"] == plain.trainer["max_epochs"] <= 15, method
        assert cfg.data_args["batch_size"] == plain.data_args["batch_size"], method
        assert cfg.model_args["order"] == (plain.model_args["order"] if method == "darts" else 1), method
