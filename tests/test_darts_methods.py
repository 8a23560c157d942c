"""The collapse fixes of DARTSSearch: each method's defining behaviour, the method presets, and
DDP / bf16 / resume with them. Tiny supernets (C=4, 3 cells, 2 nodes), as tests/test_darts_search.py."""

from __future__ import annotations


import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lightning_dlstrat.data import DigitsDataModule
from lightning_dlstrat.methods import METHODS, selectable
from lightning_dlstrat.trainers.darts_search import DARTSSearch

from _helpers import RecordRank, StopAfter, assert_clean_failure, make_trainer, run_dirs, same, tiny_batches

TINY = dict(in_shape=(1, 8, 8), num_classes=10, C=4, layers=3, steps=2, multiplier=2)

NB201 = dict(in_shape=(1, 8, 8), num_classes=10, C=4, N=1, space="nb201")


def training_weights(module: DARTSSearch, sample: bool = True) -> torch.Tensor:
    """The normal cell's mixing weights (E, O) (nb201: the cell's) of a training (sample) forward."""
    mixing = module.net._mixing_weights("cpu", sample=sample)
    return mixing[False][0] if isinstance(mixing, dict) else mixing


def test_method_presets_fill_only_what_was_not_given():
    assert DARTSSearch(**TINY, method="gdas").hparams.gumbel_tau == (10.0, 0.1)
    explicit = DARTSSearch(**TINY, method="gdas", gumbel_tau=(5.0, 1.0))
    assert explicit.hparams.gumbel_tau == (5.0, 1.0) and explicit.hparams.relaxation == "gumbel"  # explicit wins
    assert DARTSSearch(**TINY, method="pc-darts").hparams.partial_channels == 4
    assert DARTSSearch(**TINY, method="pc-darts", partial_channels=2).hparams.partial_channels == 2
    plain = DARTSSearch(**TINY)
    assert plain.net.relaxation is None and plain.arch_regulariser() is None  # DARTS: untouched
    with pytest.raises(ValueError, match="method must be one of"):
        DARTSSearch(**TINY, method="robust")
    with pytest.raises(ValueError, match="needs relaxation='sigmoid'"):
        DARTSSearch(**TINY, zero_one_weight=10.0)
    with pytest.raises(ValueError, match="max_skips .* must be an integer >= 0"):
        DARTSSearch(**NB201, max_skips=-1)


@pytest.mark.parametrize("kw", [TINY, NB201], ids=["darts", "nb201"])
def test_darts_minus_adds_a_decaying_skip_in_training_only(kw):
    torch.manual_seed(0)
    module = DARTSSearch(**kw, method="darts-")
    skip = list(module.net.operations).index("skip_connect")
    soft = training_weights(module, sample=False)
    assert torch.allclose(soft, F.softmax(module.net.arch_parameters()[0], -1))
    for epoch, beta in [(0, 1.0), (5, 0.5), (9, 0.1)]:
        module.epoch_start(epoch, 10)  # linear 1 -> 0 over 10 epochs
        w = training_weights(module)
        expected = soft.clone()
        expected[:, skip] += beta
        assert torch.allclose(w, expected, atol=1e-6)
    edge_weights = module.net.edge_weights()  # what the genotype reads: the plain softmax, no auxiliary skip
    assert torch.equal(edge_weights[0] if isinstance(edge_weights, tuple) else edge_weights, soft)


def test_beta_darts_adds_lambda_times_mean_logsumexp_gradient():
    torch.manual_seed(0)
    plain = DARTSSearch(**TINY, order=1)
    torch.manual_seed(0)
    beta = DARTSSearch(**TINY, order=1, method="beta-darts")
    beta.method("beta-darts").weight = lambda epoch, epochs: 3.0  # lambda at some epoch (0.5 * epoch: epoch 6)
    train, val = tiny_batches()
    reg = beta.arch_regulariser()
    a_n, a_r = beta.net.alphas_normal, beta.net.alphas_reduce
    stacked = torch.cat([a_n, a_r])
    assert torch.allclose(reg, 3.0 * torch.logsumexp(stacked, -1).mean())
    # its gradient is lambda * softmax(alpha) / edges: it pulls every alpha down, most the largest
    (g_n, g_r) = beta._regulariser_gradients()
    assert torch.allclose(g_n, 3.0 * F.softmax(a_n, -1) / stacked.shape[0], atol=1e-7)
    # in the search step the hypergradient is DARTS's plus exactly this (captured at Adam's step)
    w_opt, a_opt = plain.make_optimizers()
    g_plain = plain.architecture_gradient(train, val, w_opt)
    w_opt, a_opt = beta.make_optimizers()
    seen = {}
    a_opt.step = lambda: seen.update(grads=[p.grad.clone() for p in beta.net.arch_parameters()])
    beta.search_step(train, val, w_opt, a_opt)
    for got, g, e in zip(seen["grads"], g_plain, (g_n, g_r), strict=True):
        assert torch.allclose(got, g + e, atol=1e-7)


def test_sdarts_rs_perturbs_the_weight_step_only():
    torch.manual_seed(0)
    plain = DARTSSearch(**TINY, order=1)
    torch.manual_seed(0)
    rs = DARTSSearch(**TINY, order=1, method="sdarts-rs")
    sdarts = rs.method("sdarts-rs")
    rs.epoch_start(0, 10)
    assert sdarts.epsilon == pytest.approx(0.03)
    rs.epoch_start(5, 10)
    assert sdarts.epsilon == pytest.approx(0.03 + 0.27 * 0.5)  # 0.03 -> 0.3 linearly
    relax = rs.net.relaxation
    assert torch.equal(training_weights(rs), training_weights(rs, sample=False))  # the architecture step's forward: no noise
    relax.phase = "weights"
    w, soft = training_weights(rs), training_weights(rs, sample=False)
    assert (w - soft).abs().max() > 0 and w.min() >= 0  # perturbed, clipped ...
    assert torch.allclose(w.sum(-1), torch.ones(w.shape[0]))  # ... and back on the simplex (tests/test_method_fidelity.py: the formula)
    relax.phase = "arch"
    train, val = tiny_batches()
    opts = [m.make_optimizers() for m in (plain, rs)]
    for m, (w_opt, a_opt) in zip((plain, rs), opts):
        m.search_step(train, val, w_opt, a_opt)
    assert same(plain.net.arch_parameters(), rs.net.arch_parameters())  # the architecture step saw no noise ...
    assert not same(plain.net.weight_parameters(), rs.net.weight_parameters())  # ... the weight step did


def test_fair_darts_mixes_by_independent_sigmoids_and_pushes_away_from_half():
    torch.manual_seed(0)
    module = DARTSSearch(**TINY, method="fair-darts")
    a = module.net.alphas_normal
    assert not a.detach().any() and not module.net.alphas_reduce.detach().any()  # alpha starts at 0, as the code's
    with torch.no_grad():
        for p in module.net.arch_parameters():
            p.normal_(0, 1)
    ops = list(module.net.operations)
    keep = torch.tensor([op != "none" for op in ops])
    assert torch.allclose(training_weights(module), torch.sigmoid(a) * keep)  # no softmax; `none` (outside the official 7) at 0
    assert not torch.allclose(training_weights(module).sum(-1), torch.ones(a.shape[0]))
    stacked = torch.cat([a, module.net.alphas_reduce])[:, keep]  # (E_total, 7)
    assert torch.allclose(module.arch_regulariser(), -10.0 * (torch.sigmoid(stacked) - 0.5).pow(2).mean())
    g_n, _ = module._regulariser_gradients()
    assert not g_n[:, ops.index("none")].any()  # `none` takes no part
    # descending the zero-one loss moves each alpha away from 0 (sigmoid away from 0.5)
    kept = g_n[:, keep], a.detach()[:, keep]
    assert bool(((-kept[0]) * kept[1] > 0)[kept[1].abs() > 1e-6].all())


@pytest.mark.parametrize("kw", [TINY, NB201], ids=["darts", "nb201"])
def test_gdas_samples_one_op_per_edge_with_straight_through_gradient(kw):
    torch.manual_seed(0)
    module = DARTSSearch(**kw, method="gdas")
    gdas = module.method("gdas")
    module.epoch_start(0, 10)
    assert gdas.tau == 10.0
    module.epoch_start(9, 10)
    assert gdas.tau == pytest.approx(0.1)  # annealed to 0.1 at the last epoch
    module.epoch_start(0, 10)  # tau 10: a soft sample whose gradient does not underflow
    w = training_weights(module)
    assert torch.equal(w.detach(), F.one_hot(w.argmax(-1), w.shape[-1]).to(w))  # hard: one op per edge
    alpha = module.net.arch_parameters()[0]
    (grad,) = torch.autograd.grad((w * torch.randn_like(w)).sum(), alpha)
    assert (grad != 0).all()  # straight-through: every alpha of the edge gets the soft sample's gradient
    module.net.relaxation.seed = 1
    assert not torch.equal(training_weights(module).detach(), w.detach())  # another draw, another path
    assert torch.allclose(training_weights(module, sample=False), F.softmax(alpha, -1))  # the genotype's weights


def test_drnas_samples_dirichlet_with_reparameterised_gradient_and_kl():
    torch.manual_seed(0)
    module = DARTSSearch(**TINY, method="drnas")
    alpha = module.net.alphas_normal
    w = training_weights(module)
    assert torch.allclose(w.sum(-1), torch.ones(w.shape[0])) and (w > 0).all()  # on the simplex
    assert not torch.allclose(w, F.softmax(alpha, -1), atol=1e-2)  # a sample, not the mean
    (grad,) = torch.autograd.grad((w * torch.randn_like(w)).sum(), alpha)
    assert grad.abs().sum() > 0  # rsample: reparameterised
    # the mean of many samples is the Dirichlet mean (ELU(alpha) + 1) / sum
    draws = []
    for seed in range(400):
        module.net.relaxation.seed = seed
        draws.append(training_weights(module).detach())
    conc = F.elu(alpha.detach()) + 1
    assert torch.allclose(torch.stack(draws).mean(0), conc / conc.sum(-1, keepdim=True), atol=0.03)
    stacked = torch.cat([module.net.alphas_normal, module.net.alphas_reduce])
    c = F.elu(stacked) + 1
    kl = torch.distributions.kl_divergence(torch.distributions.Dirichlet(c), torch.distributions.Dirichlet(torch.ones_like(c))).sum()
    # reg_type l2 (the code's default): no KL term, alpha's weight decay 1e-3; kl: the KL term, weight decay 0
    assert module.arch_regulariser() is None and module.make_optimizers()[1].param_groups[0]["weight_decay"] == 1e-3
    kl_module = DARTSSearch(**TINY, method="drnas", dirichlet_reg="kl")
    with torch.no_grad():
        for mine, theirs in zip(kl_module.net.arch_parameters(), module.net.arch_parameters()):
            mine.copy_(theirs)
    assert torch.allclose(kl_module.arch_regulariser(), 1e-3 * kl) and kl_module.make_optimizers()[1].param_groups[0]["weight_decay"] == 0.0
    with torch.no_grad():
        kl_module.net.alphas_normal.zero_(), kl_module.net.alphas_reduce.zero_()
    assert float(kl_module.arch_regulariser()) == pytest.approx(0.0, abs=1e-9)  # Dir(1) is the prior
    with pytest.raises(ValueError, match="neither of DrNAS's regularisers"):
        DARTSSearch(**TINY, method="drnas", dirichlet_reg="l2", dirichlet_kl=1e-3)


def test_pdarts_cap_keeps_at_most_two_skips():
    torch.manual_seed(0)
    module = DARTSSearch(**{**TINY, "steps": 4, "multiplier": 4}, max_skips=2)
    skip = list(module.net.operations).index("skip_connect")
    with torch.no_grad():
        module.net.alphas_normal[:, skip] = 5.0  # skip dominates every edge
    uncapped = module.net.genotype()
    assert sum(op == "skip_connect" for op, _ in uncapped.normal) == 8
    capped = module.genotype()
    assert sum(op == "skip_connect" for op, _ in capped.normal) == 2
    assert capped.reduce == uncapped.reduce  # the reduce cell is not capped


def test_pdarts_cap_in_nb201_gives_the_weakest_skips_their_next_op():
    torch.manual_seed(0)
    module = DARTSSearch(**NB201, max_skips=1)
    ops = list(module.net.operations)
    skip, conv = ops.index("skip_connect"), ops.index("nor_conv_3x3")
    with torch.no_grad():
        module.net.arch_parameters()[0].zero_()
        module.net.arch_parameters()[0][:, skip] = torch.tensor([5.0, 4.0, 3.0, 2.0, 6.0, 1.0])  # skip wins every edge, edge 4 most
        module.net.arch_parameters()[0][:, conv] = 0.5  # the runner-up on every edge
    assert module.net.genotype().ops.count("skip_connect") == 6
    capped = module.genotype()
    assert capped.ops == ("nor_conv_3x3",) * 4 + ("skip_connect", "nor_conv_3x3")  # the strongest skip (edge 4) is kept
    loose = DARTSSearch(**NB201, max_skips=6)
    assert loose.genotype() == loose.net.genotype()  # a cap at or above the count changes nothing


def _fit(tmp_path, kw, **trainer_kw):
    L.seed_everything(0)
    dm = DigitsDataModule(bilevel=True, batch_size=16)
    module = DARTSSearch(**TINY, order=1, **kw)
    trainer = make_trainer(tmp_path, **trainer_kw)
    trainer.fit(module, datamodule=dm)
    return module, trainer


@pytest.mark.parametrize("method", [m for m in selectable() if m != "darts"])
def test_bf16_mixed_over_methods(tmp_path, method):
    module, trainer = _fit(tmp_path, {"method": method, "max_skips": 2}, precision="bf16-mixed", limit_train_batches=2, max_epochs=2)
    alphas = module.net.arch_parameters()
    assert all(a.dtype == torch.float32 and torch.isfinite(a).all() for a in alphas)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert len(module.history) == 2


@pytest.mark.parametrize(
    "kw",
    [
        dict(method="gdas", aux_skip=True, beta_decay=0.5, sdarts_epsilon=0.03, max_skips=2),  # composed
        dict(method="drnas", order=2, hessian="exact"),
    ],
    ids=["gdas+darts-+beta+sdarts", "drnas-2nd-order"],
)
def test_alpha_identical_across_ddp_ranks_with_methods(tmp_path, kw):
    L.seed_everything(0)
    dm = DigitsDataModule(bilevel=True, batch_size=16)
    module = DARTSSearch(**{**TINY, "order": 1, **kw})
    make_trainer(tmp_path, devices=2, strategy="ddp_spawn", limit_val_batches=0, callbacks=[RecordRank(str(tmp_path))]).fit(module, datamodule=dm)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert not torch.equal(r0["first"], r1["first"])
    assert same(r0["start"], r1["start"]) and not same(r0["end"], r0["start"])
    assert same(r0["end"], r1["end"])


def test_gdas_resume_gives_the_same_search(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint


    def run(out, stop=None, ckpt=None):
        L.seed_everything(0)
        dm = DigitsDataModule(bilevel=True, batch_size=16)
        module = DARTSSearch(**TINY, order=1, method="gdas")
        callbacks = [ModelCheckpoint(dirpath=str(out), save_last=True)] + ([StopAfter(stop)] if stop else [])
        trainer = make_trainer(out, max_epochs=3, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=True, callbacks=callbacks)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        return module

    straight = run(tmp_path / "straight")
    run(tmp_path / "resumed", stop=2)
    resumed = run(tmp_path / "resumed", ckpt=str(tmp_path / "resumed" / "last.ckpt"))
    assert same(resumed.net.arch_parameters(), straight.net.arch_parameters())
    assert same(resumed.net.weight_parameters(), straight.net.weight_parameters())


# --- from the command line ----------------------------------------------------------------------------
CLI_TINY = ["--max-epochs", "1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1", "--model.C=4"]


@pytest.mark.parametrize(
    "space, method",
    [("darts", m) for m in selectable()] + [("nb201", m) for m in selectable() if m != "pc-darts"],
    ids=lambda v: v,
)
def test_cli_searches_with_each_method_in_each_space(tmp_path, space, method):
    """`dlstrat fit --model darts --model.method=M [--model.space=nb201]` end to end: config.yaml
    records the method and the keys it set, the genotype is one of the space's."""
    import yaml
    from typer.testing import CliRunner

    from lightning_dlstrat.cli import app
    from lightning_dlstrat.spaces import get_space

    shape = ["--model.layers=3", "--model.steps=2", "--model.multiplier=2"] if space == "darts" else ["--model.space=nb201", "--model.N=1"]
    result = CliRunner().invoke(app, ["fit", "--model", "darts", f"--model.method={method}", "--model.max_skips=1", *shape, *CLI_TINY, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run_dir,) = run_dirs(tmp_path)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]
    hparams = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["hyper_parameters"]
    assert config["method"] == method
    for k in METHODS[method].preset:  # config.yaml shows the settings the method set (digits: some scaled), and they ran
        ran = list(hparams[k]) if isinstance(hparams[k], (list, tuple)) else hparams[k]
        assert config[k] is not None and config[k] == ran, k
    genotype = get_space(space).resolve_genotype(str(run_dir))
    assert sum(ops.count("skip_connect") for ops in list(get_space(space).chosen_ops(genotype).values())[:1]) <= 1  # the cap holds


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.method=robust"], "method must be one of"),
        (["--model.space=nb201", "--model.method=pc-darts"], "partial channels"),
        (["--model.max_skips=-1"], "max_skips (the P-DARTS cap) must be an integer >= 0"),
    ],
)
def test_cli_bad_methods_exit_2_without_a_run_directory(tmp_path, args, message):
    from typer.testing import CliRunner

    from lightning_dlstrat.cli import app

    assert_clean_failure(CliRunner().invoke(app, ["fit", "--model", "darts", *args, "--out", str(tmp_path)]), message, tmp_path)


# --- the registry: one file per method ------------------------------------------------------------
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_registers_itself_with_its_paper_and_code(name):
    import importlib

    cls = METHODS[name]
    module = importlib.import_module(cls.__module__)
    assert module.__name__.startswith("lightning_dlstrat.methods.") and module.__doc__  # its own file, which cites the paper
    assert cls.citation and "/" in cls.code  # the paper and the official repository (owner/name)
    assert set(cls.preset) <= set(DARTSSearch.__init__.__code__.co_varnames)  # its settings are module arguments
    if cls.selectable:
        module_ = DARTSSearch(**TINY, method=name)
        assert module_.hparams.method == name
        assert (name == "darts") == (not module_.methods)  # a named method turns itself on (plain DARTS adds nothing)
        assert name == "darts" or name in [m.name for m in module_.methods]


@pytest.mark.parametrize("method", ["gdas", "drnas", "sdarts-rs"])
def test_normal_and_reduce_cells_draw_independently(method):
    """Every official code draws each cell type's sample (and noise) on its own: with identical alpha
    the two cell types' training weights must still differ."""
    torch.manual_seed(0)
    module = DARTSSearch(**TINY, method=method)
    with torch.no_grad():
        module.net.alphas_reduce.copy_(module.net.alphas_normal)
    module.net.relaxation.phase = "weights"  # SDARTS-RS's noise is in the weight step
    mixing = module.net._mixing_weights("cpu", sample=True)
    normal, reduce = mixing[False][0], mixing[True][0]
    assert not torch.allclose(normal, reduce)
    again = module.net._mixing_weights("cpu", sample=True)
    assert torch.equal(again[False][0], normal) and torch.equal(again[True][0], reduce)  # the same stream, the same draw


@pytest.mark.parametrize("method", [m for m in selectable() if m != "darts"])
def test_config_yaml_holds_the_method_settings_and_replays_without_the_name(method):
    """--model.method=NAME expands once, when the configuration is resolved: config.yaml shows the
    settings that run, and the same file without `method:` resolves to the same module arguments."""
    import yaml

    from lightning_dlstrat.config import resolve
    from lightning_dlstrat.recipes import get_recipe

    recipe = get_recipe("darts")
    cfg = resolve(recipe, flags={"model": {"method": method}})
    scaled = ((recipe.presets["methods"].get(method) or {}).get("darts") or {}).get("datasets", {}).get("digits", {}).get("model", {})
    for key, value in {**METHODS[method].preset, **{k: v for k, v in scaled.items() if k in METHODS[method].preset}}.items():
        assert cfg.model_args[key] == (list(value) if isinstance(value, tuple) else value) or cfg.model_args[key] == value  # digits: as scaled
    written = yaml.safe_load(cfg.to_yaml())
    assert written["model"]["method"] == method
    del written["model"]["method"]
    replayed = yaml.safe_load(resolve(recipe, file_cfg=written).to_yaml())
    assert replayed["model"].pop("method") == "darts"  # no name given: plain DARTS's name, and the method's settings
    assert replayed == written
    explicit = resolve(recipe, flags={"model": {"method": method, **{k: None for k in METHODS[method].preset if k != "partial_channels" and k not in scaled}}})
    assert explicit.model_args == cfg.model_args  # None means "not given": the method fills it
