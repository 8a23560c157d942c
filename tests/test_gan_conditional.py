"""Class-conditional GAN networks: cBN generators and projection discriminators (models/gan_conditional.py)."""

import pytest
import torch
from torch import nn

from lightning_dlstrat.hub import HubMixin
from lightning_dlstrat.models.gan_conditional import (
    ConditionalBatchNorm,
    ConditionalDCGANGenerator,
    ConditionalDenseGenerator,
    ProjectionDCGANDiscriminator,
    ProjectionDenseDiscriminator,
    build_conditional_gan_networks,
)

CASES = [("dense", (1, 8, 8)), ("dcgan", (1, 8, 8)), ("dcgan", (1, 28, 28)), ("dcgan", (3, 32, 32))]


def nets(arch, shape, spectral_norm=False, seed=0):
    torch.manual_seed(seed)
    return build_conditional_gan_networks(arch, shape, latent_dim=16, width=8, num_classes=10, spectral_norm=spectral_norm)


@pytest.mark.parametrize("arch,shape", CASES)
def test_shapes_and_families(arch, shape):
    g, d = nets(arch, shape, spectral_norm=True)
    assert isinstance(g, HubMixin) and not isinstance(d, HubMixin)  # only generators are published
    z, y = torch.randn(6, 16), torch.arange(6)
    x = g(z, y)
    assert x.shape == (6, *shape) and x.abs().max() <= 1.0  # tanh output
    assert d(x, y).shape == (6,) and d(x).shape == (6,)


def test_auto_arch_and_errors():
    assert isinstance(nets("auto", (1, 8, 8))[0], ConditionalDenseGenerator)  # as build_gan_networks: dense under 16x16
    g, d = nets("auto", (3, 32, 32))
    assert isinstance(g, ConditionalDCGANGenerator) and isinstance(d, ProjectionDCGANDiscriminator)
    with pytest.raises(ValueError, match="unknown conditional arch 'mlp'"):
        build_conditional_gan_networks("mlp", (2,), 2, 8, 8)
    with pytest.raises(ValueError, match="for \\(C, H, W\\) images"):
        build_conditional_gan_networks("auto", (2,), 2, 8, 8)
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_conditional_gan_networks("dense", (1, 8, 8), 16, 8, 1)
    g, d = nets("dense", (1, 8, 8))
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        g(torch.randn(4, 16), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        d(torch.randn(4, 1, 8, 8), torch.zeros(4))


@pytest.mark.parametrize("arch,shape", CASES[:2])
def test_the_class_changes_the_generated_image(arch, shape):
    g, _ = nets(arch, shape)
    g.eval()  # running statistics: each sample's output depends on its own z and y only
    z = torch.randn(1, 16).expand(10, 16)  # one latent, every class
    x = g(z, torch.arange(10))  # (10, *shape)
    diffs = (x[:, None] - x[None]).flatten(2).abs().amax(dim=2)  # (10, 10) max pixel difference
    off_diagonal = diffs[~torch.eye(10, dtype=torch.bool)]
    assert off_diagonal.min() > 1e-3  # every pair of classes gives a different image
    assert torch.equal(g(z[:2], torch.tensor([3, 3]))[0], g(z[:2], torch.tensor([3, 3]))[1])  # same z, same y: same image


def test_conditional_batchnorm_is_batchnorm_with_class_gain_and_bias():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm(4, embed_dim=3)
    x, e = torch.randn(8, 4, 5, 5), torch.randn(8, 3)
    dgamma, beta = (e @ cbn.affine.weight.T).chunk(2, dim=1)  # (8, 4), (8, 4)
    normed = nn.functional.batch_norm(x, None, None, training=True, eps=cbn.bn.eps)
    expected = normed * (1 + dgamma[:, :, None, None]) + beta[:, :, None, None]
    assert torch.allclose(cbn(x, e), expected, atol=1e-5)
    assert torch.allclose(cbn(x, torch.zeros(8, 3)), normed, atol=1e-5)  # zero embedding: plain BN, unit gain


@pytest.mark.parametrize("arch,shape", [("dense", (1, 8, 8)), ("dcgan", (3, 16, 16))])
def test_projection_term_is_miyato_koyama_eq3(arch, shape):
    """D(x, y) = psi(phi(x)) + <e_y, phi(x)>, with phi the features, psi linear, e the class embedding."""
    _, d = nets(arch, shape)
    x, y = torch.randn(5, *shape), torch.tensor([0, 3, 3, 7, 9])
    phi = d.features(x)  # (5, c)
    assert phi.shape == (5, d.num_features)
    by_hand = phi @ d.psi.weight[0] + d.psi.bias[0] + (d.embed.weight[y] * phi).sum(dim=1)
    assert torch.allclose(d(x, y), by_hand, atol=1e-5)
    assert torch.allclose(d(x, y) - d(x), (d.embed.weight[y] * phi).sum(dim=1), atol=1e-5)  # y=None: no projection
    # Changing only the embedding row of class 3 moves exactly the samples labelled 3, by <delta, phi>.
    before = d(x, y).detach()
    delta = torch.randn(d.num_features)
    with torch.no_grad():
        d.embed.weight[3] += delta
    moved = d(x, y).detach() - before
    assert torch.allclose(moved, torch.where(y == 3, phi.detach() @ delta, torch.zeros(())), atol=1e-4)


def test_dcgan_features_are_summed_over_positions():
    _, d = nets("dcgan", (1, 8, 8))
    x = torch.randn(3, 1, 8, 8)
    maps = d.convs(x)  # (3, c, 4, 4)
    assert maps.shape[2:] == (4, 4)
    assert torch.allclose(d.features(x), maps.sum(dim=(2, 3)))  # the official code sums; a mean would be 16x smaller


def test_spectral_norm_covers_psi_and_embedding():
    _, d = nets("dcgan", (1, 8, 8), spectral_norm=True)
    for _ in range(30):  # power iterations run in training-mode forward passes
        d(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))
    d.eval()
    for module in (d.psi, d.embed):
        sigma = torch.linalg.matrix_norm(module.weight.detach(), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("arch,shape", CASES[:2])
def test_gradients_flow_to_every_parameter(arch, shape):
    g, d = nets(arch, shape)
    y = torch.arange(8) % 10
    d(g(torch.randn(8, 16), y), y).sum().backward()
    for name, p in list(g.named_parameters()) + list(d.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch,shape", CASES[:2])
def test_bf16_autocast_on_cpu(arch, shape):
    g, d = nets(arch, shape, spectral_norm=True)
    y = torch.arange(8) % 10
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = g(torch.randn(8, 16), y)
        logits = d(x, y)
    assert x.shape == (8, *shape) and logits.shape == (8,)
    assert torch.isfinite(logits.float()).all() and torch.isfinite(x.float()).all()
    logits.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in g.parameters() if p.grad is not None)
    assert g.embed.weight.grad is not None and g.embed.weight.grad.abs().sum() > 0


def test_unconditional_discriminator_use():
    g = ConditionalDenseGenerator(16, (1, 8, 8), num_classes=4, hidden=(8, 16))
    d = ProjectionDenseDiscriminator((1, 8, 8), num_classes=4, hidden=(8, 16))
    assert d.num_features == 16 and d(g(torch.randn(3, 16), torch.tensor([0, 1, 2]))).shape == (3,)


# --- the GAN LightningModule with conditional=True and DiffAugment -------------------------------
import json  # noqa: E402

import lightning as L  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from _helpers import RankDigests, StopAfter, assert_clean_failure, checkpoint_weights, dlstrat, run_dir_of, tiny_gan  # noqa: E402
from lightning_dlstrat.cli import app  # noqa: E402
from lightning_dlstrat.data import DigitsDataModule  # noqa: E402
from lightning_dlstrat.recipes import fit  # noqa: E402
from lightning_dlstrat.trainers.gan import GAN  # noqa: E402

COND = {"conditional": True, "diffaugment": "translation,cutout", "r1_weight": 1.0}


@pytest.mark.slow
def test_cli_conditional_gan_draws_the_class_asked_for_and_samples_by_class(tmp_path):
    # 300 generator steps of the default conditional recipe: measured 96.0% of the samples labelled
    # as the class they were drawn for (a generator that ignores y scores ~10%)
    r = dlstrat("fit", "--model", "gan", "--model.conditional=true", "--trainer.max_steps=300", "--model.num_eval_samples=500", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    run_dir = run_dir_of(r.stdout)
    m = json.loads((run_dir / "summary.json").read_text())["gan_metrics"]
    assert m["label_agreement_pct"] >= 85.0 and min(m["label_agreement_per_class_pct"]) >= 50.0, m
    assert len(m["confident_per_class_pct"]) == 10 and {"classifier_kid", "classifier_is"} <= set(m)
    assert "labelled as the class asked for" in r.stdout
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    module = GAN.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    assert module.num_classes == 10 and module.fixed_y.tolist() == [c for c in range(10) for _ in range(8)]
    # the samples follow the labels: asking for other classes changes what the classifier reads
    from lightning_dlstrat.metrics import digits_label_agreement

    sevens = (module.sample(200, labels=7) + 1) / 2
    assert digits_label_agreement(sevens.clamp(0, 1), torch.full((200,), 7))["label_agreement_pct"] > 80.0
    assert digits_label_agreement(sevens.clamp(0, 1), torch.full((200,), 1))["label_agreement_pct"] < 10.0

    one = tmp_path / "sevens.png"
    r = dlstrat("sample", "--checkpoint", str(ckpt), "--class", "7", "-n", "16", "--out", str(one))
    assert r.returncode == 0 and "wrote 16 samples of class 7" in r.stdout, r.stdout + r.stderr
    rows = tmp_path / "rows.png"
    r = dlstrat("sample", "--checkpoint", str(ckpt), "-n", "25", "--out", str(rows))
    assert r.returncode == 0 and "30 samples, one row of 3 per class 0-9" in r.stdout, r.stdout + r.stderr
    from PIL import Image

    width, height = Image.open(rows).size  # 3 columns x 10 rows of 32-pixel cells (+ 2-pixel padding)
    assert (width, height) == (3 * 34 + 2, 10 * 34 + 2)
    assert_clean_failure(dlstrat("sample", "--checkpoint", str(ckpt), "--class", "10", "--out", str(one)), "--class must be a class of this generator, 0..9")
    assert_clean_failure(dlstrat("sample", "--out", str(one)), "give exactly one of --checkpoint")


def test_conditional_needs_labels_and_unconditional_takes_no_class(tmp_path):
    def cli(*args):  # in this process: each check is an error before training (a subprocess each took ~6 s to import)
        return CliRunner().invoke(app, list(args))

    out = tmp_path / "runs"
    assert_clean_failure(cli("fit", "--model", "gan", "--data", "ring8", "--model.conditional=true", "--out", str(out)), "needs labelled data", out)
    assert_clean_failure(cli("fit", "--model", "gan", "--data", "ring8", "--model.diffaugment=translation", "--out", str(out)), "DiffAugment augments images", out)
    assert_clean_failure(cli("fit", "--model", "gan", "--model.diffaugment=blur", "--out", str(out)), "unknown DiffAugment policy 'blur'", out)
    assert_clean_failure(
        cli("fit", "--model", "gan", "--data.train_fraction=0.1", "--out", str(out)), "every epoch ends in a batch of one", out
    )
    assert_clean_failure(cli("sample", "--zoo", "gan-digits", "--class", "3", "--out", str(tmp_path / "x.png")), "this generator is unconditional")


def test_discriminator_sees_augmented_images_and_the_batch_labels(tmp_path):
    """One training step: D gets T(x) (DiffAugment) with the real labels, and exactly x without a policy."""
    dm = DigitsDataModule(normalization="tanh", batch_size=16)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    seen = {}
    for policy in ("", "translation"):
        L.seed_everything(0, verbose=False)
        gan = GAN(in_shape=dm.dims, conditional=True, num_classes=10, diffaugment=policy, noise_seed=0)
        calls = []
        gan.discriminator.register_forward_hook(lambda mod, args, out: calls.append((args[0].detach().clone(), args[1].clone())))
        trainer = L.Trainer(
            max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
        )
        trainer.fit(gan, train_dataloaders=torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16))
        seen[policy] = calls
    (real_plain, y_plain), (real_aug, y_aug) = seen[""][0], seen["translation"][0]
    assert torch.equal(real_plain, x) and torch.equal(y_plain, y) and torch.equal(y_aug, y)  # reals with their own labels
    assert not torch.equal(real_aug, x)  # shifted ...
    assert (real_aug == 0).any() and real_aug.abs().max() <= x.abs().max()  # ... with zero-filled borders
    fake_labels = seen[""][1][1]
    assert fake_labels.shape == y.shape and not torch.equal(fake_labels, y)  # fakes get their own uniform draws


@pytest.mark.slow
def test_conditional_diffaugment_resume_is_the_run_that_never_stopped(tmp_path):
    whole = fit(**tiny_gan(tmp_path / "whole", data="digits", epochs=3), model=COND)
    first = fit(**tiny_gan(tmp_path / "part", data="digits", epochs=3, callbacks=[StopAfter(1)]), model=COND)
    resumed = fit(**tiny_gan(tmp_path / "part", data="digits", epochs=3), model=COND, resume=first["last_checkpoint"])
    assert resumed["run_dir"] == first["run_dir"]
    a, b = checkpoint_weights(whole["last_checkpoint"]), checkpoint_weights(resumed["last_checkpoint"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["gan_metrics"] == whole["gan_metrics"]


def test_conditional_ddp_two_cpu_processes_keep_networks_identical(tmp_path):
    dm = DigitsDataModule(normalization="tanh", batch_size=16)
    gan = GAN(in_shape=dm.dims, noise_seed=0, num_classes=dm.num_classes, **COND)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=4, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path), callbacks=[RankDigests(str(tmp_path))],
    )
    trainer.fit(gan, datamodule=dm)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["g"], r0["d"], r0["ema"]) == (r1["g"], r1["d"], r1["ema"]) and r0["step"] == 4


def test_conditional_bf16_mixed_on_cpu(tmp_path):
    L.seed_everything(0, verbose=False)
    dm = DigitsDataModule(normalization="tanh", batch_size=32)
    gan = GAN(in_shape=dm.dims, arch="dcgan", width=8, num_classes=dm.num_classes, **{**COND, "diffaugment": "color,translation,cutout"})
    trainer = L.Trainer(
        accelerator="cpu", precision="bf16-mixed", max_epochs=1, limit_train_batches=4, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )
    trainer.fit(gan, datamodule=dm)
    assert trainer.global_step == 4 and all(torch.isfinite(p).all() for p in gan.parameters())
    assert (tmp_path / "samples" / "epoch-0001.png").is_file()
