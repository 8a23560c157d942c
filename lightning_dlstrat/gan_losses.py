"""GAN objectives: the losses, the gradient penalties and the EMA of the generator.

Plain functions on tensors and ``nn.Module``s, shared by the GAN LightningModule
(:mod:`lightning_dlstrat.trainers.gan`) and usable without it:

- losses on raw discriminator logits, in fp32, one :class:`GANLoss` each, registered in
  :data:`LOSSES` where it is defined: non-saturating (Goodfellow et al. 2014), hinge (Lim & Ye
  2017; Miyato et al. 2018), Wasserstein (Arjovsky et al. 2017) and least squares (Mao et al.
  2017); a new loss is one more ``@register_loss`` class here;
- WGAN-GP (Gulrajani et al. 2017) and R1 (Mescheder et al. 2018), with autocast off so their
  double backward runs in full precision;
- the exponential moving average of the generator (Karras et al. 2018; Yazici et al. 2019).
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn


# --- losses (on raw discriminator logits, computed in fp32) --------------------------------------
class GANLoss:
    """One GAN objective: the discriminator's and the generator's loss, and what training it needs.

    A subclass defines ``discriminator(real, fake)`` and ``generator(fake)`` as static methods on
    raw logits of shape (B,) in fp32, each returning a scalar, and is listed in :data:`LOSSES` by
    the :func:`register_loss` decorator on its class statement.
    """

    name: ClassVar[str]  # --model.loss=NAME
    about: ClassVar[str]  # what it is, and where from
    gradient_penalty: ClassVar[bool] = False  # a critic kept 1-Lipschitz by WGAN-GP's penalty (--model.gp_weight)
    betas: ClassVar[tuple[float, float]] = (0.5, 0.999)  # Adam's default betas for it (DCGAN's; WGAN-GP's (0, 0.9))
    n_critic: ClassVar[int] = 1  # default discriminator steps per generator step
    unbounded_scores: ClassVar[bool] = False  # D outputs scores, not log-odds: train/d_gap (mean real - fake score) is logged

    @staticmethod
    def discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def generator(fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# loss name -> its class; each loss below registers itself
LOSSES: dict[str, type[GANLoss]] = {}


def register_loss(cls: type[GANLoss]) -> type[GANLoss]:
    """Class decorator: list a :class:`GANLoss` in :data:`LOSSES` under its ``name``."""
    if cls.name in LOSSES and LOSSES[cls.name].__qualname__ != cls.__qualname__:
        raise ValueError(f"a GAN loss named {cls.name!r} is registered already ({LOSSES[cls.name].__qualname__})")
    LOSSES[cls.name] = cls
    return cls


def get_loss(name: str) -> type[GANLoss]:
    """The loss ``name``; an unknown one is a ValueError listing them all."""
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[name]


@register_loss
class NonSaturating(GANLoss):
    name, about = "ns", "non-saturating (Goodfellow et al. 2014)"

    @staticmethod
    def discriminator(real, fake):  # binary cross-entropy with labels 1 / 0: -log sigmoid(r) - log(1 - sigmoid(f))
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    @staticmethod
    def generator(fake):  # -log sigmoid(f) instead of log(1 - sigmoid(f))
        return F.softplus(-fake).mean()


@register_loss
class Hinge(GANLoss):
    name, about = "hinge", "hinge (Lim & Ye 2017; Miyato et al. 2018)"
    unbounded_scores = True

    @staticmethod
    def discriminator(real, fake):
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    @staticmethod
    def generator(fake):
        return -fake.mean()


@register_loss
class WassersteinGP(GANLoss):
    name, about = "wgan-gp", "Wasserstein with gradient penalty (Arjovsky et al. 2017; Gulrajani et al. 2017)"
    gradient_penalty, betas, n_critic, unbounded_scores = True, (0.0, 0.9), 5, True

    @staticmethod
    def discriminator(real, fake):  # the critic's negated Wasserstein estimate; the training step adds the penalty
        return fake.mean() - real.mean()

    @staticmethod
    def generator(fake):
        return -fake.mean()


@register_loss
class LeastSquares(GANLoss):
    name, about = "lsgan", "least squares (Mao et al. 2017)"

    @staticmethod
    def discriminator(real, fake):  # Mao et al.'s (a, b, c) = (0, 1, 1)
        return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()

    @staticmethod
    def generator(fake):
        return 0.5 * ((fake - 1.0) ** 2).mean()


def discriminator_loss(loss: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss ``loss`` (a name in :data:`LOSSES`) for logits of shape (B,); a scalar, in fp32."""
    return get_loss(loss).discriminator(real_logits.float(), fake_logits.float())


def generator_loss(loss: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's loss ``loss`` for the discriminator's ``fake_logits`` (B,); a scalar, in fp32."""
    return get_loss(loss).generator(fake_logits.float())


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
