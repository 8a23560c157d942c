"""Every GAN loss of ``gan_losses.LOSSES`` in training: the GAN module's first step against the
paper's formula, written out here apart from gan_losses.py, and a few steps that move every weight.

A loss added to LOSSES fails here until its formula is added to FORMULAS.
"""

import copy
import math
from typing import Callable, NamedTuple

import lightning as L
import pytest
import torch

from lightning_dlstrat.data import Ring8DataModule
from lightning_dlstrat.gan_losses import LOSSES
from lightning_dlstrat.trainers.gan import GAN


class Formula(NamedTuple):
    """A GAN objective on raw logits r = D(x) and f = D(G(z)), as its paper writes it."""

    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (r, f) -> the loss D minimises
    generator: Callable[[torch.Tensor], torch.Tensor]  # f -> the loss G minimises
    penalty: bool  # D's loss adds lambda times Gulrajani et al.'s gradient penalty
    bias_untouched: bool  # D's output bias gets no gradient near initialisation (every |logit| < 1)


FORMULAS = {
    # Goodfellow et al. 2014: D maximises log D(x) + log(1 - D(G(z))), D = sigmoid of the logit;
    # G maximises log D(G(z)) (the non-saturating form of Sec. 3)
    "ns": Formula(
        lambda r, f: -(torch.sigmoid(r).log().mean() + (1 - torch.sigmoid(f)).log().mean()),
        lambda f: -torch.sigmoid(f).log().mean(),
        penalty=False, bias_untouched=False,
    ),
    # Lim & Ye 2017; Miyato et al. 2018: E[max(0, 1 - r)] + E[max(0, 1 + f)]; G: -E[f]
    "hinge": Formula(
        lambda r, f: torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean(),
        lambda f: -f.mean(),
        penalty=False, bias_untouched=True,  # inside the margins: -1/B per real and +1/B per fake cancel
    ),
    # Gulrajani et al. 2017, Algorithm 1: E[f] - E[r] + lambda E[(||grad D(x_hat)|| - 1)^2]; G: -E[f]
    "wgan-gp": Formula(
        lambda r, f: f.mean() - r.mean(),
        lambda f: -f.mean(),
        penalty=True, bias_untouched=True,  # a shift of every logit cancels, and the penalty is a gradient in x
    ),
    # Mao et al. 2017, with (a, b, c) = (0, 1, 1): 1/2 E[(r - 1)^2] + 1/2 E[f^2]; G: 1/2 E[(f - 1)^2]
    "lsgan": Formula(
        lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean(),
        lambda f: 0.5 * ((f - 1) ** 2).mean(),
        penalty=False, bias_untouched=False,
    ),
}


def penalty(d, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x D(x_hat)|| - 1)^2] at x_hat = eps real + (1 - eps) fake, by hand ((B, 2) points)."""
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x_hat).sum(), x_hat)
    return ((grad.norm(dim=1) - 1) ** 2).mean()


class KeepFirstStep(L.Callback):
    """Keeps what the first training batch saw: the batch, both networks before and after it, and the logged losses."""

    def on_train_batch_start(self, trainer, gan, batch, batch_idx):
        if batch_idx == 0:
            self.real = batch[0].detach().clone()
            self.g0, self.d0 = copy.deepcopy(gan.generator), copy.deepcopy(gan.discriminator)

    def on_train_batch_end(self, trainer, gan, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.g1, self.d1 = copy.deepcopy(gan.generator), copy.deepcopy(gan.discriminator)
            self.d_loss, self.g_loss = (trainer.callback_metrics[f"train/{k}"].item() for k in ("d_loss", "g_loss"))


@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss_trains_by_its_formula(loss, tmp_path):
    """Four steps of each loss on 2-D points: on the first batch the logged D and G losses are the
    paper's formula, each network's step lowers its own loss, and every weight moves, finitely."""
    assert loss in FORMULAS, f"the loss {loss!r} has no formula in tests/test_gan_losses.py: add it to FORMULAS"
    formula = FORMULAS[loss]
    L.seed_everything(0, verbose=False)
    dm = Ring8DataModule(seed=0, batch_size=64)
    gan = GAN(in_shape=dm.dims, loss=loss, n_critic=1, noise_seed=7)  # n_critic=1: a generator step on every batch
    start = copy.deepcopy(gan)
    first = KeepFirstStep()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path), callbacks=[first],
    )
    trainer.fit(gan, datamodule=dm)
    assert trainer.global_step == 4 and gan.d_steps == 4

    # The first batch again, by hand. The module draws, from its noise stream seeded with noise_seed:
    # D step: z (and eps for the penalty); G step: a fresh z. G steps against the updated D.
    noise = torch.Generator().manual_seed(7)
    real, n, latent = first.real, len(first.real), gan.hparams.latent_dim
    with torch.no_grad():
        fake = first.g0(torch.randn(n, latent, generator=noise))
    eps = torch.rand(n, 1, generator=noise) if formula.penalty else None
    z = torch.randn(n, latent, generator=noise)

    def d_loss(d) -> torch.Tensor:
        value = formula.discriminator(d(real), d(fake))
        return value + gan.hparams.gp_weight * penalty(d, real, fake, eps) if formula.penalty else value

    d_before, d_after = d_loss(first.d0), d_loss(first.d1)
    assert first.d_loss == pytest.approx(d_before.item(), rel=1e-5, abs=1e-6)
    assert d_after < d_before  # the discriminator's step descended its loss (measured: by 2.7e-3 to 0.15)
    with torch.no_grad():
        g_before, g_after = formula.generator(first.d1(first.g0(z))), formula.generator(first.d1(first.g1(z)))
    assert first.g_loss == pytest.approx(g_before.item(), rel=1e-5, abs=1e-6)
    assert g_after < g_before  # the generator's step descended its loss (measured: by 1.5e-4 to 3.2e-4)

    bias = list(dict(gan.discriminator.named_parameters()))[-1]  # D's output bias: it shifts every logit alike
    assert bias.endswith("bias")
    for net in ("generator", "discriminator", "generator_ema"):
        before, after = dict(getattr(start, net).named_parameters()), dict(getattr(gan, net).named_parameters())
        for name, p in after.items():
            assert torch.isfinite(p).all(), (net, name)
            if net == "discriminator" and name == bias:  # Adam leaves a weight without gradient exactly in place
                assert torch.equal(p, before[name]) == formula.bias_untouched, (net, name)
            else:
                assert not torch.equal(p, before[name]), (net, name)  # trained
    assert all(math.isfinite(trainer.callback_metrics[f"train/{k}"].item()) for k in ("d_loss", "g_loss"))
