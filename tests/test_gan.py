"""The GAN: losses, penalties, EMA, metrics, resuming, DDP, precision, divergence and the CLI."""

import json
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from lightning_dlstrat.cli import app
from lightning_dlstrat.data import DigitsDataModule, Ring8DataModule, ring8_modes
from lightning_dlstrat.metrics import digits_metrics, mode_metrics
from lightning_dlstrat.models.gan import DCGANDiscriminator, DCGANGenerator, dcgan_plan
from lightning_dlstrat.gan_losses import LOSSES, GANLoss, discriminator_loss, ema_update, generator_loss, gradient_penalty, r1_penalty, register_loss
from lightning_dlstrat.recipes import fit
from lightning_dlstrat.trainers.gan import GAN, GANDivergedError
from _helpers import RankDigests, StopAfter, checkpoint_weights, run_dir_of, run_dirs, tiny_gan
from lightning_dlstrat import gan_losses

runner = CliRunner()


# --- losses --------------------------------------------------------------------------------------
def test_losses_on_known_logits():
    zero, two = torch.zeros(4), torch.full((4,), 2.0)
    log2 = math.log(2.0)
    assert discriminator_loss("ns", zero, zero).item() == pytest.approx(2 * log2)
    assert generator_loss("ns", zero).item() == pytest.approx(log2)
    # confident and right: BCE -> softplus(-2) + softplus(-2)
    assert discriminator_loss("ns", two, -two).item() == pytest.approx(2 * math.log1p(math.exp(-2.0)))
    assert discriminator_loss("hinge", two, -two).item() == 0.0  # both margins met
    assert discriminator_loss("hinge", zero, zero).item() == pytest.approx(2.0)
    assert generator_loss("hinge", two).item() == pytest.approx(-2.0)
    assert discriminator_loss("wgan-gp", torch.tensor([3.0, 1.0]), torch.tensor([0.5, 0.5])).item() == pytest.approx(0.5 - 2.0)
    assert generator_loss("wgan-gp", torch.tensor([0.5, 1.5])).item() == pytest.approx(-1.0)
    assert discriminator_loss("lsgan", torch.ones(3), torch.zeros(3)).item() == 0.0
    assert discriminator_loss("lsgan", zero, torch.ones(4)).item() == pytest.approx(1.0)
    assert generator_loss("lsgan", torch.ones(3)).item() == 0.0
    # logits in bf16 (as under autocast) give fp32 losses
    assert discriminator_loss("ns", zero.bfloat16(), zero.bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown loss"):
        generator_loss("minimax", zero)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registered_loss_rewards_the_right_side(name):
    """Each loss in the registry: the discriminator's is lower when it tells real from fake, the
    generator's lower when its fakes score as real; scalars in fp32 whatever the logits' dtype."""
    loss = LOSSES[name]
    assert issubclass(loss, GANLoss) and loss.name == name and loss.about
    right, wrong = torch.full((8,), 2.0), torch.full((8,), -2.0)
    assert discriminator_loss(name, right, wrong) < discriminator_loss(name, wrong, right)
    assert generator_loss(name, right) < generator_loss(name, wrong)
    for value in (discriminator_loss(name, right.bfloat16(), wrong.bfloat16()), generator_loss(name, right.half())):
        assert value.dim() == 0 and value.dtype == torch.float32 and torch.isfinite(value)
    # the registry's defaults are what the module trains with
    gan = GAN(in_shape=(2,), arch="mlp", loss=name, width=8)
    assert tuple(gan.hparams.betas) == loss.betas and gan.hparams.n_critic == loss.n_critic


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registered_loss_trains_a_step(name, tmp_path):
    L.seed_everything(0, verbose=False)
    dm = Ring8DataModule(batch_size=32)
    gan = GAN(in_shape=dm.dims, loss=name, latent_dim=2, width=8, n_critic=1)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path),
    )
    trainer.fit(gan, datamodule=dm)
    assert trainer.global_step == 2 and all(torch.isfinite(p).all() for p in gan.parameters())
    assert ("train/d_gap" in trainer.callback_metrics) == LOSSES[name].unbounded_scores


def test_a_loss_registers_where_it_is_defined():
    @register_loss
    class Flipped(GANLoss):  # a made-up loss, to show the one place a new one goes
        name, about = "test-flipped", "for this test only"

        @staticmethod
        def discriminator(real, fake):
            return F.softplus(-real).mean() + F.softplus(fake).mean()

        @staticmethod
        def generator(fake):
            return F.softplus(-fake).mean()

    try:
        assert LOSSES["test-flipped"] is Flipped
        assert GAN(in_shape=(2,), arch="mlp", loss="test-flipped", width=8).hparams.loss == "test-flipped"
        with pytest.raises(ValueError, match="registered already"):
            register_loss(type("Other", (GANLoss,), {"name": "test-flipped"}))
    finally:
        del LOSSES["test-flipped"]
    with pytest.raises(ValueError, match="unknown loss 'test-flipped'; choose one of: ns, hinge, wgan-gp, lsgan"):
        GAN(in_shape=(2,), arch="mlp", loss="test-flipped")


def test_gradient_penalty_is_fp32_under_bf16_autocast():
    # A linear critic has input gradient w everywhere: GP = (||w|| - 1)^2, R1 = ||w||^2.
    critic = nn.Linear(3, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.3, 0.4, 1.2]]))  # ||w|| = 1.3
    critic = nn.Sequential(critic, nn.Flatten(0))
    seen = []
    critic.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    real, fake, eps = torch.randn(8, 3), torch.randn(8, 3), torch.rand(8, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert critic(real).dtype == torch.bfloat16  # autocast is really on
        gp = gradient_penalty(critic, real, fake, eps)
        r1 = r1_penalty(critic, real)
    assert seen[1:] == [torch.float32, torch.float32]  # the penalties' critic passes ran in fp32
    assert gp.dtype == r1.dtype == torch.float32
    assert gp.item() == pytest.approx((1.3 - 1.0) ** 2, rel=1e-6)  # bf16 would be off by ~1e-2
    assert r1.item() == pytest.approx(1.3**2, rel=1e-6)
    assert gp.requires_grad  # create_graph: the penalty trains the critic


# --- EMA -----------------------------------------------------------------------------------------
def test_ema_warmup_average_and_batchnorm_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    ema = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    ema.load_state_dict(model.state_dict())
    before = ema[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()(torch.randn(16, 4))  # moves BatchNorm's running statistics
    d = ema_update(ema, model, decay=0.999, step=1)
    assert d == pytest.approx(2 / 11)  # warm-up: (1 + t) / (10 + t) < 0.999
    assert torch.allclose(ema[0].weight, d * before + (1 - d) * model[0].weight)
    assert torch.equal(ema[1].running_mean, model[1].running_mean)  # buffers copied, not averaged
    assert torch.equal(ema[1].num_batches_tracked, model[1].num_batches_tracked)
    assert ema_update(ema, model, decay=0.999, step=100_000) == 0.999  # warm-up over


# --- networks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_dcgan_is_sized_from_the_data(shape):
    g, d = DCGANGenerator(16, shape, width=8), DCGANDiscriminator(shape, width=8, spectral_norm=True)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, *shape) and x.abs().max() <= 1.0
    assert d(x).shape == (3,)


def test_dense_and_mlp_families():
    assert GAN(in_shape=(1, 8, 8), noise_seed=0).arch == "dense"  # auto: a DCGAN under 16x16 has one upsampling step
    assert GAN(in_shape=(1, 28, 28), noise_seed=0).arch == "dcgan"
    dense = GAN(in_shape=(1, 28, 28), arch="dense", noise_seed=0)
    assert dense.generator(torch.randn(4, 100)).shape == (4, 1, 28, 28)
    assert dense.discriminator(torch.randn(4, 1, 28, 28)).shape == (4,)
    points = GAN(in_shape=(2,), noise_seed=0)
    assert points.arch == "mlp" and points.sample(7).shape == (7, 2)
    assert torch.equal(points.sample(7), points.sample(7))  # seeded: the same samples every call


def test_size_the_generator_cannot_produce_is_a_clear_error(tmp_path):
    assert dcgan_plan(28) == (7, 2) and dcgan_plan(8) == (4, 1)
    for bad in (9, 6, 18 * 2 + 1):
        with pytest.raises(ValueError, match=f"cannot produce {bad}x{bad}"):
            GAN(in_shape=(1, bad, bad), arch="dcgan")
    with pytest.raises(ValueError, match="cannot produce 37x37"):
        GAN(in_shape=(1, 37, 37))  # auto picks dcgan from 16x16 up
    with pytest.raises(ValueError, match="square"):
        GAN(in_shape=(3, 32, 16))
    # From the CLI: exit 2 with the reason, before any training.
    result = runner.invoke(app, ["fit", "--model", "gan", "--model.arch=mlp", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "arch 'mlp' is for vector data" in result.output
    assert not list(tmp_path.glob("*/checkpoints/*.ckpt"))


# --- metrics -------------------------------------------------------------------------------------
def test_mode_metrics_on_hand_made_samples():
    modes, sigma = ring8_modes(), 0.01
    samples = torch.cat([
        modes[0].repeat(100, 1),  # 100 exactly on mode 0
        modes[1].repeat(50, 1) + torch.tensor([0.02, 0.0]),  # 50 at 2 sigma from mode 1: high quality
        modes[2].repeat(50, 1) + torch.tensor([0.05, 0.0]),  # 5 sigma from mode 2: not
    ])
    r = mode_metrics(samples, modes, sigma)
    assert r["modes_captured"] == 2 and r["num_modes"] == 8 and r["num_samples"] == 200
    assert r["high_quality_pct"] == pytest.approx(75.0)
    q = torch.tensor([100 / 150, 50 / 150])
    assert r["reverse_kl"] == pytest.approx(float((q * (q * 8).log()).sum()))
    # A perfect sampler: every mode, all high quality, KL 0.
    perfect = mode_metrics(modes.repeat(10, 1), modes, sigma)
    assert perfect["modes_captured"] == 8 and perfect["high_quality_pct"] == 100.0 and perfect["reverse_kl"] == pytest.approx(0.0)
    assert mode_metrics(torch.zeros(5, 2), modes, sigma)["reverse_kl"] is None


def test_digits_classifier_metrics_on_real_and_noise():
    dm = DigitsDataModule(normalization="none")
    dm.setup("fit")
    real = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    test = dm.test_set.tensors[0]
    on_real = digits_metrics(test, real, test)
    assert on_real["confident_pct"] > 90.0  # the shipped classifier is sure of real digits
    assert all(5.0 < p < 15.0 for p in on_real["class_pct"]) and sum(on_real["class_pct"]) == pytest.approx(100.0, abs=0.1)
    # the test split against the training split is exactly the baseline measurement
    assert on_real["classifier_fd"] == pytest.approx(on_real["classifier_fd_real_baseline"], rel=1e-9)
    assert on_real["classifier_kid"] == pytest.approx(on_real["classifier_kid_real_baseline"], rel=1e-9)
    assert on_real["classifier_is"] > 8.0  # confident, balanced labels: near the 10-class maximum
    noise = digits_metrics(torch.rand(400, 1, 8, 8), real, test)
    assert noise["classifier_fd"] > 20 * on_real["classifier_fd_real_baseline"]
    assert noise["classifier_kid"] > 20 * on_real["classifier_kid_real_baseline"]
    assert noise["confident_pct"] < on_real["confident_pct"] and noise["classifier_is"] < on_real["classifier_is"]
    # with the classes asked for: real test digits "asked for" by their own labels agree; shifted ones do not
    labels = dm.test_set.tensors[1]
    asked = digits_metrics(test, real, test, labels=labels)
    assert asked["label_agreement_pct"] > 95.0 and min(asked["label_agreement_per_class_pct"]) > 85.0
    assert min(asked["confident_per_class_pct"]) > 75.0
    assert digits_metrics(test, real, test, labels=(labels + 1) % 10)["label_agreement_pct"] < 3.0


# --- training: CLI, resume, divergence -----------------------------------------------------------
def test_cli_fit_ring8_writes_samples_metrics_and_sample_command(tmp_path):
    result = runner.invoke(
        app, ["fit", "--model", "gan", "--data", "ring8", "--max-epochs", "2", "--trainer.limit_train_batches=10", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    assert (run_dir / "samples" / "epoch-0001.png").is_file() and (run_dir / "samples" / "epoch-0002.png").is_file()
    assert (run_dir / "samples" / "final.png").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    m = summary["gan_metrics"]
    assert m["kind"] == "modes" and m["num_samples"] == 2500
    # the reported metrics are those of the checkpoint's EMA generator, recomputed here
    ema = GAN.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    recomputed = mode_metrics(ema.sample(2500), ring8_modes(), Ring8DataModule.sigma)
    assert {k: m[k] for k in recomputed} == recomputed
    assert summary["generator_steps"] == 20 and summary["discriminator_steps"] == 20  # global_step = G steps
    assert f"{m['modes_captured']}/8" in result.output and "high-quality samples" in result.output
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["sample", "--checkpoint", str(ckpt), "-n", "64", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # bad input: exit 2 with a message
    bad = runner.invoke(app, ["sample", "--checkpoint", str(tmp_path / "nope.ckpt"), "--out", str(out)])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    bad = runner.invoke(app, ["sample", "--checkpoint", str(ckpt), "-n", "0", "--out", str(out)])
    assert bad.exit_code == 2 and "at least 1" in bad.output


@pytest.mark.slow
def test_cli_fit_digits_default_recipe_learns_digits(tmp_path):
    # The digits recipe (dense nets, R1) for 1,000 of its 6,300 generator steps: measured 74.9%
    # confident samples, classes 7.4-12.0%, Frechet distance 5.94 (real vs real 6.28). The DCGAN
    # it replaced fails all three bars under the same command: 64.6%, a class at 4.8%, 14.51.
    result = runner.invoke(app, ["fit", "--model", "gan", "--trainer.max_steps=1000", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir_of(result.output) / "summary.json").read_text())
    m = summary["gan_metrics"]
    assert m["kind"] == "classifier" and summary["generator_steps"] == 1000
    assert m["confident_pct"] >= 65.0
    assert all(5.0 <= c <= 15.0 for c in m["class_pct"]), m["class_pct"]
    assert m["classifier_fd"] < 2 * m["classifier_fd_real_baseline"]
    assert "confidently labelled (p >= 0.9)" in result.output


def test_resume_continues_the_same_run(tmp_path):
    whole = fit(**tiny_gan(tmp_path / "whole", epochs=3))
    first = fit(**tiny_gan(tmp_path / "part", epochs=3, callbacks=[StopAfter(1)]))
    ckpt = torch.load(first["last_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["gan"]["noise_states"].shape[0] == 1 and ckpt["gan"]["d_steps"] == 5
    resumed = fit(**tiny_gan(tmp_path / "part", epochs=3), resume=first["last_checkpoint"])
    assert resumed["run_dir"] == first["run_dir"]  # the same run, continued in its own directory
    a, b = checkpoint_weights(whole["last_checkpoint"]), checkpoint_weights(resumed["last_checkpoint"])
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["gan_metrics"] == whole["gan_metrics"]


class _PoisonAtEpoch(L.Callback):
    """Makes the discriminator's output NaN from the given epoch on."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 2:
            with torch.no_grad():
                pl_module.discriminator.net[-1].bias.fill_(float("nan"))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(GANDivergedError) as e:
        fit(**tiny_gan(tmp_path, epochs=3, callbacks=[_PoisonAtEpoch(1)]))
    message = str(e.value)
    assert "training diverged: d_loss became nan" in message and "epoch 2" in message
    (run_dir,) = run_dirs(tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert str(last) in message
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    GAN.load_from_checkpoint(last, weights_only=True).sample(10)


# --- devices and precision -----------------------------------------------------------------------
def test_ddp_two_cpu_processes_keep_networks_identical(tmp_path):
    dm = Ring8DataModule(seed=0, batch_size=64)
    gan = GAN(in_shape=dm.dims, noise_seed=0)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=6, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path), callbacks=[RankDigests(str(tmp_path))],
    )
    trainer.fit(gan, datamodule=dm)  # strategy "ddp_spawn" leaves find_unused_parameters False
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["g"], r0["d"], r0["ema"]) == (r1["g"], r1["d"], r1["ema"])
    assert r0["step"] == r1["step"] == 6 and r0["d_steps"] == 6
    assert r0["noise"] != r1["noise"]  # each rank draws its own latents


def test_bf16_mixed_on_cpu_with_gradient_penalty_and_n_critic(tmp_path):
    L.seed_everything(0, verbose=False)
    dm = DigitsDataModule(normalization="tanh", batch_size=32)
    gan = GAN(in_shape=dm.dims, loss="wgan-gp", n_critic=2, width=8)
    trainer = L.Trainer(
        accelerator="cpu", precision="bf16-mixed", max_epochs=1, limit_train_batches=6, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )
    trainer.fit(gan, datamodule=dm)
    assert trainer.global_step == 3 and gan.d_steps == 6  # max_steps-style counting: generator steps
    assert all(torch.isfinite(p).all() for p in gan.parameters())
    assert math.isfinite(float(trainer.callback_metrics["train/d_loss"]))
    assert (tmp_path / "samples" / "epoch-0001.png").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("loss", list(gan_losses.LOSSES))
def test_16_mixed_on_gpu(tmp_path, loss):
    L.seed_everything(0, verbose=False)
    dm = DigitsDataModule(normalization="tanh", batch_size=64)
    gan = GAN(in_shape=dm.dims, loss=loss, r1_weight=1.0)
    trainer = L.Trainer(
        accelerator="gpu", devices=1, precision="16-mixed", max_epochs=2, limit_train_batches=10, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )
    trainer.fit(gan, datamodule=dm)
    assert trainer.precision_plugin.scaler is not None  # loss scaling really ran
    assert all(torch.isfinite(p).all() for p in gan.parameters())
    assert trainer.global_step == 20 // gan.hparams.n_critic  # 20 discriminator steps; 5 per generator step for wgan-gp
