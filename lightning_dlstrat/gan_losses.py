"""GAN objectives: the losses, the gradient penalties and the EMA of the generator.

Plain functions on tensors and ``nn.Module``s, shared by the GAN LightningModule
(:mod:`lightning_dlstrat.trainers.gan`) and usable without it:

- losses on raw discriminator logits, in fp32: non-saturating (Goodfellow et al. 2014), hinge
  (Lim & Ye 2017; Miyato et al. 2018), Wasserstein (Arjovsky et al. 2017) and least squares
  (Mao et al. 2017);
- WGAN-GP (Gulrajani et al. 2017) and R1 (Mescheder et al. 2018), with autocast off so their
  double backward runs in full precision;
- the exponential moving average of the generator (Karras et al. 2018; Yazici et al. 2019).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ns", "hinge", "wgan-gp", "lsgan")


# --- losses (on raw discriminator logits, computed in fp32) --------------------------------------
def discriminator_loss(loss: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss for ``real_logits`` / ``fake_logits`` of shape (B,); a scalar."""
    r, f = real_logits.float(), fake_logits.float()
    if loss == "ns":  # binary cross-entropy with labels 1 / 0: -log sigmoid(r) - log(1 - sigmoid(f))
        return F.softplus(-r).mean() + F.softplus(f).mean()
    if loss == "hinge":
        return F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean()
    if loss == "wgan-gp":  # the critic's negated Wasserstein estimate; the penalty is added separately
        return f.mean() - r.mean()
    if loss == "lsgan":  # Mao et al. (a, b, c) = (0, 1, 1)
        return 0.5 * ((r - 1.0) ** 2).mean() + 0.5 * (f**2).mean()
    raise ValueError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")


def generator_loss(loss: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's loss for the discriminator's ``fake_logits`` (B,); a scalar."""
    f = fake_logits.float()
    if loss == "ns":  # non-saturating: -log sigmoid(f) instead of log(1 - sigmoid(f))
        return F.softplus(-f).mean()
    if loss in ("hinge", "wgan-gp"):
        return -f.mean()
    if loss == "lsgan":
        return 0.5 * ((f - 1.0) ** 2).mean()
    raise ValueError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")


def gradient_penalty(discriminator: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: E[(||grad D(x_hat)|| - 1)^2] at x_hat = eps * real + (1 - eps) * fake, in fp32.

    ``eps``: (B, 1, ...) uniform weights broadcastable to ``real``. Autocast is switched off, so
    under ``bf16-mixed`` / ``16-mixed`` the penalty's double backward runs in full precision.
    """
    with torch.autocast(device_type=real.device.type, enabled=False):
        x_hat = (eps * real.detach().float() + (1.0 - eps) * fake.detach().float()).requires_grad_(True)  # (B, *shape)
        out = discriminator(x_hat).float()  # (B,)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)  # (B, *shape)
        return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def r1_penalty(discriminator: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """R1: E[||grad D(x)||^2] on real data, in fp32 (weight it by gamma / 2).

    ``discriminator``: any ``x -> (B,)`` logits, e.g. ``lambda x: D(x, y)`` for a conditional one.
    """
    with torch.autocast(device_type=real.device.type, enabled=False):
        x = real.detach().float().requires_grad_(True)  # (B, *shape)
        (grad,) = torch.autograd.grad(discriminator(x).float().sum(), x, create_graph=True)  # (B, *shape)
        return grad.flatten(1).pow(2).sum(dim=1).mean()


# --- EMA -----------------------------------------------------------------------------------------
@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> float:
    """One EMA step after ``step`` (>= 1) updates of ``model``; returns the decay used.

    Warm-up: the decay is min(decay, (1 + step) / (10 + step)) (TensorFlow's
    ExponentialMovingAverage with num_updates), so the average is not dominated by the random
    initial weights early on. Buffers (BatchNorm running statistics) are copied, not averaged:
    they describe the activations of the current weights and are cheap to re-estimate.
    """
    d = min(decay, (1.0 + step) / (10.0 + step))
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - d)  # p_ema = d * p_ema + (1 - d) * p
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
    return d
