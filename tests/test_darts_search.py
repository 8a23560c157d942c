"""DARTS search: hypergradients against exact autograd, the optimiser split, DDP, AMP, resume, CLI.

Everything runs a tiny supernet (C=4, 3 cells, 2 nodes per cell) so the file stays around a
minute on 2 CPU cores.
"""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from torch.func import functional_call
from typer.testing import CliRunner

from lightning_dlstrat.cli import app
from lightning_dlstrat.data import DigitsDataModule
from lightning_dlstrat.spaces.darts.search import SearchNetwork
from lightning_dlstrat.spaces.darts.genotype import Genotype
from lightning_dlstrat.trainers.darts_search import DARTSSearch

from _helpers import RecordRank, exact_unrolled_gradient, make_trainer, run_dirs, same, smooth_, snapshot, tiny_batches

TINY = dict(in_shape=(1, 8, 8), num_classes=10, C=4, layers=3, steps=2, multiplier=2)


@pytest.mark.parametrize("partial_channels", [1, 2])
def test_second_order_matches_double_backward(partial_channels):
    # Central differences have O(eps^2) error only where the loss is smooth in the weights. ReLU
    # and max-pooling are piecewise linear: at the default radius (|eps v| = 0.01) some units
    # change side within the perturbation and the gradient difference jumps (measured in
    # float64: the second-order term off by ~100 % with them, and right to 1e-10 at radius 1e-5;
    # a property of the method, which the reference shares). So this supernet has Softplus for
    # ReLU and average- for max-pooling (all 8 operations stay, as does the PC-DARTS bypass
    # pooling). The remaining error is (eps^2 / 6) |third derivative along v|: measured <= 5e-4
    # of the second-order term at the default radius, so the tolerance is 3e-3 (6x margin), and
    # 10x smaller radius must cut the error ~100x (asserted: >= 30x). The "/ 2 * eps" bug, a
    # wrong sign or a wrong xi are off by ~100 %. lr (xi) = 0.5 makes the second-order term as
    # large as the first-order part, so an error in it cannot hide inside the total.
    torch.manual_seed(0)
    # the per-edge reference network, whose ReLU / max-pool modules smooth_ can swap (the fast
    # network calls F.relu; tests/test_darts_fast.py shows the two compute the same function)
    module = DARTSSearch(
        **{**TINY, "in_shape": (1, 6, 6), "num_classes": 3}, partial_channels=partial_channels, order=2, lr=0.5, implementation="reference"
    ).double()
    smooth_(module.net)
    w_opt, a_opt = module.make_optimizers()
    train, val = tiny_batches(n=4, size=6, classes=3, dtype=torch.float64)
    module.search_step(train, val, w_opt, a_opt, update_arch=False)  # fills the momentum buffers
    total, direct = exact_unrolled_gradient(module, train, val, w_opt)
    got = module.architecture_gradient(train, val, w_opt)  # default radius 0.01
    module.hparams.fd_radius = 1e-3
    finer = module.architecture_gradient(train, val, w_opt)
    assert len(got) == (4 if partial_channels > 1 else 2)  # alphas (and betas) normal, reduce
    for g, f, t, d in zip(got, finer, total, direct, strict=True):
        assert g.dtype == torch.float64
        implicit = torch.linalg.vector_norm(t - d)
        assert implicit > 0.2 * torch.linalg.vector_norm(d)  # the second-order term matters here
        err, err_finer = torch.linalg.vector_norm(g - t), torch.linalg.vector_norm(f - t)
        assert err <= 3e-3 * implicit
        assert err_finer <= err / 30


@pytest.mark.parametrize(
    "implementation, space, extra",
    [("reference", "darts", {}), ("fast", "darts", {"partial_channels": 2}), ("fast", "nb201", {})],
)
def test_exact_hessian_matches_double_backward_on_relu_supernet(implementation, space, extra):
    # No smoothing: the real ReLU / max-pool supernet in float64. hessian="exact" is the exact
    # unrolled gradient (measured: equal to ~1e-15 relative to the second-order term); the
    # paper's finite difference is off by a factor of ~1-15 at radius 1e-2 and 1e-3, where ReLUs
    # change sign between w - eps v and w + eps v, and agrees to ~3e-9 at radius 1e-5 (measured).
    torch.manual_seed(0)
    if space == "nb201":
        kw = dict(in_shape=(1, 6, 6), num_classes=3, C=4, N=1, space="nb201")
    else:
        kw = {**TINY, "in_shape": (1, 6, 6), "num_classes": 3, **extra}
    module = DARTSSearch(**kw, order=2, lr=0.5, implementation=implementation, hessian="exact").double()
    w_opt, a_opt = module.make_optimizers()
    train, val = tiny_batches(n=4, size=6, classes=3, dtype=torch.float64)
    module.search_step(train, val, w_opt, a_opt, update_arch=False)  # fills the momentum buffers
    total, direct = exact_unrolled_gradient(module, train, val, w_opt)
    before = snapshot(module.net.state_dict().values())
    got = module.architecture_gradient(train, val, w_opt)
    assert same(before, module.net.state_dict().values())  # weights and BatchNorm buffers untouched
    module.hparams.hessian = "fd"
    errors = {}
    for radius in (1e-2, 1e-5):
        module.hparams.fd_radius = radius
        errors[radius] = module.architecture_gradient(train, val, w_opt)
    for i, (g, t, d) in enumerate(zip(got, total, direct, strict=True)):
        implicit = torch.linalg.vector_norm(t - d)
        assert implicit > 0.2 * torch.linalg.vector_norm(d)  # the second-order term matters here
        assert torch.linalg.vector_norm(g - t) <= 1e-8 * implicit
        coarse, fine = (torch.linalg.vector_norm(errors[r][i] - t) / implicit for r in (1e-2, 1e-5))
        assert fine <= 1e-6  # the finite difference converges to the exact value ...
        assert coarse >= 1e3 * fine  # ... from far off at the paper's radius on a ReLU network


def test_hessian_option_is_checked():
    with pytest.raises(ValueError, match="hessian must be"):
        DARTSSearch(**TINY, hessian="autograd")


def test_first_order_is_grad_of_val_loss():
    torch.manual_seed(0)
    module = DARTSSearch(**TINY, order=1)
    w_opt, _ = module.make_optimizers()
    train, val = tiny_batches()
    got = module.architecture_gradient(train, val, w_opt)
    expected = torch.autograd.grad(module.loss(module.net(val[0]), val[1]), module.net.arch_parameters())
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-9)


def test_optimisers_are_disjoint_and_steps_touch_only_their_own():
    torch.manual_seed(0)
    module = DARTSSearch(**TINY, order=2)
    net = module.net
    w_opt, a_opt = module.make_optimizers()
    in_w = {id(p) for g in w_opt.param_groups for p in g["params"]}
    in_a = {id(p) for g in a_opt.param_groups for p in g["params"]}
    assert in_a == {id(p) for p in net.arch_parameters()} and not in_w & in_a
    assert in_w | in_a == {id(p) for p in net.parameters()}

    train, val = tiny_batches()
    module.search_step(train, val, w_opt, a_opt, update_arch=False)  # momentum buffers exist now
    weights, alphas = net.weight_parameters(), net.arch_parameters()
    w0, b0, a0 = snapshot(weights), snapshot(net.buffers()), snapshot(alphas)
    seen = {}
    a_step, w_step = a_opt.step, w_opt.step

    def spy_a_step(*args, **kw):
        # the hypergradient's virtual step and finite differences restored weights and BN stats
        seen["restored"] = same(weights, w0) and same(net.buffers(), b0)
        out = a_step(*args, **kw)
        seen["arch step kept weights"] = same(weights, w0)
        return out

    def spy_w_step(*args, **kw):
        a1 = snapshot(alphas)
        out = w_step(*args, **kw)
        seen["weight step kept alpha"] = same(alphas, a1)
        return out

    a_opt.step, w_opt.step = spy_a_step, spy_w_step
    module.search_step(train, val, w_opt, a_opt)
    assert seen == {"restored": True, "arch step kept weights": True, "weight step kept alpha": True}
    assert not same(alphas, a0) and not same(weights, w0)  # and both did move


@pytest.mark.parametrize("layers", [1, 2])
def test_searches_without_a_normal_cell_are_refused(layers):
    # with 1 or 2 cells both sit at the reduction positions: the normal alpha would stay untrained
    with pytest.raises(ValueError, match="at least 3 cells"):
        DARTSSearch(in_shape=(1, 8, 8), C=4, layers=layers)


def test_too_small_input_is_rejected():
    with pytest.raises(ValueError, match="too small"):
        SearchNetwork(C=4, layers=8, in_shape=(3, 3, 3))  # 2 reductions need >= 4x4
    with pytest.raises(ValueError, match="too small"):
        DARTSSearch(in_shape=(1, 1, 1), C=4, layers=3)
    SearchNetwork(C=4, layers=8, steps=2, multiplier=2, in_shape=(1, 4, 4))  # the smallest that fits


# --- Lightning: DDP, mixed precision, resume, CLI ---------------------------------------------------
@pytest.mark.parametrize("hessian", ["exact"])  # "fd": tests/test_space_search.py, in every space
def test_alpha_identical_across_ddp_ranks(tmp_path, hessian):
    L.seed_everything(0)
    dm = DigitsDataModule(bilevel=True, batch_size=16)
    monitor = dict(eigen_every=1, eigen_iters=3) if hessian == "exact" else {}  # the collapse monitor too, on one of them
    module = DARTSSearch(**TINY, order=2, hessian=hessian, **monitor)
    make_trainer(tmp_path, devices=2, strategy="ddp_spawn", limit_val_batches=0, callbacks=[RecordRank(str(tmp_path))]).fit(module, datamodule=dm)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert not torch.equal(r0["first"], r1["first"])  # the ranks trained on different data ...
    assert same(r0["start"], r1["start"])
    assert not same(r0["end"], r0["start"])  # ... alpha moved ...
    assert same(r0["end"], r1["end"])  # ... identically on both
    assert r0["eigen"] == r1["eigen"] and (hessian == "fd" or r0["eigen"][0] is not None)  # one eigenvalue on all ranks


@pytest.mark.parametrize("hessian", ["exact"])  # "fd": tests/test_space_search.py, in every space
def test_bf16_mixed_keeps_alpha_in_float32(tmp_path, hessian):
    L.seed_everything(0)
    dm = DigitsDataModule(bilevel=True, batch_size=16)
    module = DARTSSearch(**TINY, order=2, hessian=hessian)
    a0 = snapshot(module.net.arch_parameters())
    trainer = make_trainer(tmp_path, precision="bf16-mixed", limit_train_batches=2)
    trainer.fit(module, datamodule=dm)
    alphas = module.net.arch_parameters()
    assert all(a.dtype == torch.float32 and torch.isfinite(a).all() for a in alphas)
    assert not same(alphas, a0)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ops, _ = module.net._mixing_weights("cpu")[False]
        assert ops.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 loss scaling needs CUDA")
@pytest.mark.parametrize("hessian", ["fd", "exact"])
def test_fp16_mixed_on_gpu(tmp_path, hessian):
    L.seed_everything(0)
    dm = DigitsDataModule(bilevel=True, batch_size=16)
    module = DARTSSearch(**TINY, order=2, hessian=hessian)
    a0 = snapshot(module.net.arch_parameters())
    trainer = make_trainer(tmp_path, accelerator="gpu", precision="16-mixed", limit_train_batches=4)
    trainer.fit(module, datamodule=dm)
    assert trainer.precision_plugin.scaler is not None
    alphas = [a.cpu() for a in module.net.arch_parameters()]
    assert all(a.dtype == torch.float32 and torch.isfinite(a).all() for a in alphas)
    assert not same(alphas, a0)


def test_cli_search_writes_genotype_history_and_pictures(tmp_path):
    args = ["fit", "--model", "darts", "--max-epochs", "2", "--out", str(tmp_path), "--model.C=4", "--model.layers=3", "--model.steps=2", "--model.multiplier=2"]
    args += ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = run_dirs(tmp_path)
    genotype = Genotype.load(run_dir / "genotype.json")
    assert genotype.steps == 2
    history = [json.loads(line) for line in (run_dir / "genotype_history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1] and history[-1]["genotype"] == str(genotype)
    assert len(history[-1]["alpha_normal"]) == 5 and abs(sum(history[-1]["alpha_normal"][0]) - 1) < 1e-5
    assert (run_dir / "alpha.png").stat().st_size > 0 and (run_dir / "genotype.png").stat().st_size > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["genotype"] == str(genotype) and "test/acc" in summary["test_metrics"]
    assert f"retrain with: dlstrat fit --model darts-net --genotype {run_dir / 'genotype.json'}" in result.output
    assert "alpha/normal/e0/sep_conv_3x3" in (run_dir / "metrics.csv").read_text().splitlines()[0]


# --- collapse monitor (R-DARTS) ----------------------------------------------------------------------
def explicit_alpha_hessian(module: DARTSSearch, val) -> torch.Tensor:
    """The full Hessian of L_val w.r.t. all of alpha (flattened, in arch_parameters order), as R-DARTS builds it."""
    net = module.net
    alphas = net.arch_parameters()
    names = {id(p): n for n, p in net.named_parameters()}
    params = dict(net.named_parameters())

    def loss_of(flat):
        parts = flat.split([a.numel() for a in alphas])
        sub = {names[id(a)]: t.view(a.shape) for a, t in zip(alphas, parts)}
        return module.loss(functional_call(net, {**params, **sub}, (val[0],)), val[1])

    return torch.autograd.functional.hessian(loss_of, torch.cat([a.detach().reshape(-1) for a in alphas]))


@pytest.mark.parametrize("space, iters", [("darts", 20), ("nb201", 100)])
def test_power_iteration_finds_the_top_eigenvalue_of_the_alpha_hessian(space, iters):
    # darts with PC-DARTS edge weights (90 alpha): the top eigenvalue is also the largest in
    # magnitude and 20 products reach it (measured: 6e-8 relative); nb201 (30 alpha): the largest
    # in magnitude is negative (-0.217 against a top of 0.066), so the shifted second run is
    # taken (measured: 1e-9 relative after 100 products each).
    torch.manual_seed(0)
    if space == "nb201":
        module = DARTSSearch(in_shape=(1, 8, 8), num_classes=10, C=4, N=1, space="nb201", order=1).double()
    else:
        module = DARTSSearch(**TINY, partial_channels=2, order=1).double()
    with torch.no_grad():
        for a in module.net.arch_parameters():
            a.normal_(0, 1)  # away from uniform: a spectrum with some spread
    _, val = tiny_batches(dtype=torch.float64)
    before = snapshot(module.net.state_dict().values())
    got = module.dominant_eigenvalue(val, iters=iters)
    assert same(before, module.net.state_dict().values())
    assert all(p.grad is None for p in module.net.parameters())
    spectrum = torch.linalg.eigvalsh(explicit_alpha_hessian(module, val))
    assert got == pytest.approx(float(spectrum[-1]), rel=1e-6)
    if space == "nb201":
        assert spectrum[0].abs() > spectrum[-1].abs()  # the case the shift is for


def test_eigen_monitor_logs_plots_and_early_stop_rolls_back(tmp_path):
    # eigen_stop_factor 1e-9: any positive eigenvalue "grows", so the stop comes at the first check
    # the RobustDARTS rule allows (methods/darts_es.py; window 1, delta 1, every epoch: local
    # averages from the third evaluation on, so the first check is at epoch 3), rolling alpha back
    # to epoch 2's, the date of the earlier local average, as the RobustDARTS code returns that genotype
    L.seed_everything(0)
    dm = DigitsDataModule(bilevel=True, batch_size=16)
    module = DARTSSearch(
        **TINY, order=1, arch_lr=0.05, eigen_every=1, eigen_iters=5, eigen_stop=True, eigen_stop_factor=1e-9,
        eigen_stop_window=1, eigen_stop_delta=1, eigen_stop_start=0,
    )
    trainer = make_trainer(tmp_path, max_epochs=6, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    assert trainer.current_epoch == 4  # stopped after epoch 3 of 6
    history = module.history
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert all(r["eigenvalue"] > 0 and set(r["skips"]) == {"normal", "reduce"} for r in history)
    stop = history[-1]["early_stop"]
    assert stop["rolled_back_to_epoch"] == 2 and stop["genotype"] == history[2]["genotype"]
    epoch2 = [torch.tensor(a) for a in history[2]["raw_alpha"]]
    assert same(module.net.arch_parameters(), epoch2)  # alpha is epoch 2's again
    assert torch.isfinite(trainer.callback_metrics["arch/eigenvalue"])


def test_cli_eigen_monitor_writes_collapse_plot(tmp_path):
    args = ["fit", "--model", "darts", "--max-epochs", "2", "--out", str(tmp_path), "--model.C=4", "--model.layers=3", "--model.steps=2", "--model.multiplier=2"]
    args += ["--model.eigen_every=1", "--model.eigen_iters=3"]
    args += ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = run_dirs(tmp_path)
    history = [json.loads(line) for line in (run_dir / "genotype_history.jsonl").read_text().splitlines()]
    assert all("eigenvalue" in r for r in history)
    assert (run_dir / "collapse.png").stat().st_size > 0
    assert "arch/eigenvalue" in (run_dir / "metrics.csv").read_text().splitlines()[0]


def test_eigen_stop_needs_the_monitor():
    with pytest.raises(ValueError, match="eigen_every >= 1"):
        DARTSSearch(**TINY, eigen_stop=True)
