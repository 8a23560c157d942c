"""The GAN LightningModule: manual optimisation of a generator and a discriminator.

Goodfellow et al., "Generative Adversarial Nets" (NeurIPS 2014), with the practice that made GANs
trainable since: DCGAN networks (Radford et al. 2016), the two time-scale update rule (TTUR,
Heusel et al. 2017: separate learning rates), ``n_critic`` discriminator steps per generator step
and the Wasserstein loss with gradient penalty (Gulrajani et al. 2017), the hinge loss (Lim & Ye
2017; Miyato et al. 2018), least squares (Mao et al. 2017), R1 (Mescheder et al. 2018), and an
exponential moving average of the generator (Karras et al. 2018; Yazici et al. 2019).

What this module gets right where common Lightning GAN code does not:

- **Steps.** One training batch is one discriminator step; every ``n_critic``-th batch is also one
  generator step. ``trainer.global_step`` counts *generator* steps only, so
  ``Trainer(max_steps=N)`` means N generator updates (the GAN literature's "iterations") instead
  of Lightning's default for manual optimisation, where every optimiser's step counts
  (Lightning issue #17958). ``self.d_steps`` counts discriminator steps.
- **DDP.** Each network's gradients are all-reduced by this module, right after that network's
  backward pass (which runs under DDP's ``no_sync``), so DDP never waits for gradients of the
  network a loss does not touch: no unused-parameter errors (Lightning #20328, #20866) whatever
  ``find_unused_parameters`` says, and G and D stay identical across ranks.
- **Mixed precision.** Losses are computed in fp32 from logits (no sigmoid + BCE, which autocast
  rejects); the gradient penalty and R1 run with autocast disabled, in fp32, so their
  double-backward neither overflows in fp16 nor loses precision in bf16. All backward passes go
  through ``manual_backward``, so ``16-mixed``'s loss scaling applies.
- **EMA generator.** ``generator_ema`` follows the generator with warm-up and copies its
  BatchNorm buffers; it is what ``sample``, the metrics and exports use, and it is in checkpoints.
- **Resuming.** The latent noise generator (one per DDP rank) and the global RNG (which shuffles
  the data) are saved in checkpoints, so a resumed run draws the same noise and batches as one
  that never stopped.
- **Divergence.** A non-finite loss stops training with :class:`GANDivergedError` before it
  reaches the weights; the last checkpoint (from the last finished epoch) is left intact.
"""

from __future__ import annotations

import io
import os
from math import prod
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..models.gan import build_gan_networks, resolve_arch
from ..core import DlstratError, atomic_write_bytes, destroy_gloo_group_at_exit, mean_over_ranks

LOSSES = ("ns", "hinge", "wgan-gp", "lsgan")
FID_CHOICES = ("auto", "classifier", "inception", "none")
LR_SCHEDULES = ("constant", "linear")


class GANDivergedError(DlstratError):
    """A loss became NaN or infinite; training stopped before the bad step touched the weights."""


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


def gradient_penalty(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: E[(||grad D(x_hat)|| - 1)^2] at x_hat = eps * real + (1 - eps) * fake, in fp32.

    ``eps``: (B, 1, ...) uniform weights broadcastable to ``real``. Autocast is switched off, so
    under ``bf16-mixed`` / ``16-mixed`` the penalty's double backward runs in full precision.
    """
    with torch.autocast(device_type=real.device.type, enabled=False):
        x_hat = (eps * real.detach().float() + (1.0 - eps) * fake.detach().float()).requires_grad_(True)  # (B, *shape)
        out = discriminator(x_hat).float()  # (B,)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)  # (B, *shape)
        return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """R1: E[||grad D(x)||^2] on real data, in fp32 (weight it by gamma / 2)."""
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


def _defaults(arch: str) -> dict[str, Any]:
    """Values for arguments left as None, by network family (tuned for docs/gan.md's targets)."""
    if arch == "mlp":
        # 2-D points: with a 2-D latent, 93% of ring8 samples were within 3 sigma after 4,000
        # steps, against 75% with a 16-D latent (both 128 wide, decaying 1e-3, R1); R1 keeps the
        # generator from orbiting the ring (without it the EMA average collapses to the centre),
        # the linear decay lets the samples settle into the 0.01-wide modes, and a short EMA
        # (0.99) does not lag behind a generator that is still converging.
        return {"latent_dim": 2, "width": 128, "lr": 1e-3, "r1_weight": 1.0, "lr_schedule": "linear", "ema_decay": 0.99}
    # Images: a decaying 5e-4 reached a given confidence on the digits in fewer steps than a
    # constant 2e-4; DCGAN widths 32 trained 4x faster than 64, to the same quality.
    images = {"latent_dim": 100, "width": 32, "lr": 5e-4, "r1_weight": 0.0, "lr_schedule": "linear", "ema_decay": 0.999}
    if arch == "dense":
        # The dense pair (auto: images under 16x16, the 8x8 digits): R1 (gamma 1) keeps the
        # discriminator from overfitting 1,294 training digits. Over 3 seeds it evened out the
        # class shares (5.8-14.6% per class without, 8.3-12.6% with) and took the Frechet distance
        # from 4.7-7.1 to 1.4-2.8, at the same 86-88% confident samples (docs/gan.md).
        return {**images, "r1_weight": 1.0}
    return images


class GAN(L.LightningModule):
    """A GAN on any dataset of this package; networks from :func:`~lightning_dlstrat.models.gan.build_gan_networks`.

    Example::

        dm = Ring8DataModule()
        gan = GAN(in_shape=dm.dims)
        L.Trainer(max_steps=5000).fit(gan, datamodule=dm)   # 5000 generator steps
        points = gan.sample(2500)                           # (2500, 2) from the EMA generator
    """

    # No validation metric: ModelCheckpoint keeps the latest epoch as best.ckpt as well as last.ckpt.
    monitor, mode = None, "min"

    def __init__(
        self,
        in_shape: tuple[int, ...] = (1, 8, 8),  # shape of one sample, from the datamodule
        arch: str = "auto",  # "auto" (mlp for vectors, dense under 16x16, dcgan for larger images), "dense", "dcgan" or "mlp"
        latent_dim: int | None = None,  # None: 2 for 2-D points, 100 for images
        width: int | None = None,  # MLP hidden width / DCGAN base channels; None: 128 / 32 (dense: fixed classic widths)
        loss: str = "ns",  # "ns" (non-saturating), "hinge", "wgan-gp" or "lsgan"
        gp_weight: float = 10.0,  # lambda of the WGAN-GP penalty (loss="wgan-gp" only)
        r1_weight: float | None = None,  # gamma of the R1 penalty on real data, 0: off; None: 1 for 2-D points and dense nets, 0 for DCGAN
        lr_g: float | None = None,  # generator learning rate (TTUR: set it apart from lr_d); None: 1e-3 for 2-D points, 5e-4 for images
        lr_d: float | None = None,  # discriminator learning rate; None: as lr_g's default
        betas: tuple[float, float] | None = None,  # Adam betas; None: (0.5, 0.999), (0.0, 0.9) for wgan-gp
        n_critic: int | None = None,  # discriminator steps per generator step; None: 5 for wgan-gp, else 1
        lr_schedule: str | None = None,  # "constant", or "linear": both rates decay to 0 over the run (the default)
        spectral_norm: bool = False,  # spectral normalisation on every discriminator layer
        ema_decay: float | None = None,  # EMA of the generator (warm-up in ema_update); None: 0.99 for 2-D points, 0.999 for images
        noise_seed: int | None = None,  # seeds the latent noise; None: drawn from torch's (seeded) global RNG
        num_fixed: int | None = None,  # fixed latents drawn every epoch; None: 64 images / 2,500 points
        num_eval_samples: int = 2500,  # samples for the metrics after fit (PacGAN / VEEGAN use 2,500)
        fid: str = "auto",  # "auto": classifier FD on digits, Inception FID on other images; or "classifier", "inception", "none"
        inception_weights: str | None = None,  # local InceptionV3 weights file for offline FID
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
        if fid not in FID_CHOICES:
            raise ValueError(f"unknown fid {fid!r}; choose one of: {', '.join(FID_CHOICES)}")
        if noise_seed is None:
            noise_seed = int(torch.randint(2**31 - 1, ()))
        arch = resolve_arch(arch, tuple(in_shape))  # ValueError before training for a bad arch / size
        defaults = _defaults(arch)
        latent_dim = latent_dim or defaults["latent_dim"]
        width = width or defaults["width"]
        lr_g = defaults["lr"] if lr_g is None else lr_g
        lr_d = defaults["lr"] if lr_d is None else lr_d
        r1_weight = defaults["r1_weight"] if r1_weight is None else r1_weight
        lr_schedule = lr_schedule or defaults["lr_schedule"]
        ema_decay = defaults["ema_decay"] if ema_decay is None else ema_decay
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {lr_schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}")
        betas = tuple(betas) if betas is not None else ((0.0, 0.9) if loss == "wgan-gp" else (0.5, 0.999))
        n_critic = (5 if loss == "wgan-gp" else 1) if n_critic is None else n_critic
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, not {n_critic}")
        self.save_hyperparameters()
        # The resolved values, so a checkpoint records what actually ran.
        self.hparams.update(
            arch=arch, noise_seed=noise_seed, latent_dim=latent_dim, width=width, lr_g=lr_g, lr_d=lr_d, r1_weight=r1_weight,
            lr_schedule=lr_schedule, ema_decay=ema_decay, betas=list(betas), n_critic=n_critic, in_shape=list(in_shape),
        )
        self.automatic_optimization = False

        self.in_shape = tuple(in_shape)
        self.arch = arch
        self.generator, self.discriminator = build_gan_networks(self.arch, self.in_shape, latent_dim, width, spectral_norm)
        self.generator_ema = build_gan_networks(self.arch, self.in_shape, latent_dim, width)[0]
        self.generator_ema.load_state_dict(self.generator.state_dict())
        self.generator_ema.requires_grad_(False).eval()

        self.num_fixed = num_fixed or (2500 if len(self.in_shape) == 1 else 64)
        g = torch.Generator().manual_seed(noise_seed)
        self.register_buffer("fixed_z", torch.randn(self.num_fixed, latent_dim, generator=g))  # (num_fixed, latent)
        self._noise: torch.Generator | None = None  # training latents; made per rank in on_fit_start
        self._restored: dict | None = None
        self.d_steps = 0  # discriminator steps taken (trainer.global_step counts generator steps)

    # --- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None, ema: bool = True, batch_size: int = 1000) -> torch.Tensor:
        """``n`` samples (n, *in_shape) in data space ([-1, 1] for images) from the EMA generator."""
        g = torch.Generator().manual_seed(self.hparams.noise_seed + 1 if seed is None else seed)
        z = torch.randn(n, self.hparams.latent_dim, generator=g)  # (n, latent)
        return self._generate(z, ema, batch_size)

    @torch.no_grad()
    def _generate(self, z: torch.Tensor, ema: bool = True, batch_size: int = 1000) -> torch.Tensor:
        net = self.generator_ema if ema else self.generator
        was_training = net.training
        net.eval()
        out = torch.cat([net(chunk.to(self.device)).float() for chunk in z.split(batch_size)])  # (n, *in_shape)
        net.train(was_training)
        return out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator_ema(z)  # (B, latent) -> (B, *in_shape)

    # --- setup and checks ------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        destroy_gloo_group_at_exit()
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        dims = tuple(getattr(dm, "dims", ()) or ())
        if dims and dims != self.in_shape:
            raise DlstratError(f"the GAN was built for data of shape {self.in_shape}, but the datamodule serves {dims}")
        if len(self.in_shape) == 3 and getattr(dm, "normalization", "tanh") != "tanh":
            raise DlstratError(
                f"the GAN's image generators end in tanh, so images must be scaled to [-1, 1]: use "
                f"--data.normalization=tanh (got {dm.normalization!r})"
            )
        if stage == "fit":
            self._check_metrics_available(dm)

    def _check_metrics_available(self, dm) -> None:
        """Fail before training, not after, if the chosen FID cannot be computed."""
        kind = metric_kind(self.hparams.fid, self.in_shape, getattr(dm, "name", ""))
        if kind == "classifier" and getattr(dm, "name", "") != "digits":
            raise DlstratError(f"--model.fid=classifier needs the digits dataset (the shipped classifier is for 8x8 digits), not {getattr(dm, 'name', '?')}; use inception or none")
        if kind == "inception":  # on every rank: one rank failing alone would leave the others waiting
            from ..metrics import inception_weights

            try:
                inception_weights(self.hparams.inception_weights)
            except RuntimeError as e:
                raise DlstratError(str(e)) from None

    def configure_optimizers(self):
        betas = tuple(self.hparams.betas)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr_g, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr_d, betas=betas)
        return opt_g, opt_d

    def __getstate__(self) -> dict:
        # torch.Generator does not pickle, and ddp_spawn pickles the module; on_fit_start remakes it.
        state = super().__getstate__()
        state["_noise"] = None
        return state

    def on_fit_start(self) -> None:
        self._noise = torch.Generator()
        restored, self._restored = self._restored, None
        states = restored["noise_states"] if restored else None
        if states is not None and self.global_rank < len(states):
            self._noise.set_state(states[self.global_rank].clone())
        else:
            # A different stream per DDP rank, so ranks do not generate the same fakes.
            self._noise.manual_seed(self.hparams.noise_seed + (self.global_rank << 32))
        if restored and restored.get("rng_state") is not None:
            torch.set_rng_state(restored["rng_state"])

    # --- training --------------------------------------------------------------------------------
    def _latent(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.hparams.latent_dim, generator=self._noise).to(self.device)  # (n, latent)

    def _ddp(self) -> DistributedDataParallel | None:
        model = self.trainer.strategy.model
        return model if isinstance(model, DistributedDataParallel) else None

    @contextmanager
    def _only(self, net: nn.Module):
        """Only ``net`` requires grad inside: the other network's weights get no gradients."""
        others = [p for m in (self.generator, self.discriminator) if m is not net for p in m.parameters()]
        flags = [p.requires_grad for p in others]
        for p in others:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(others, flags):
                p.requires_grad_(flag)

    def _all_reduce_grads(self, net: nn.Module) -> None:
        """Average ``net``'s gradients over DDP ranks, in one flat buffer (one collective)."""
        if self.trainer.world_size == 1:
            return
        params = [p for p in net.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:  # keeps the flat layout identical on every rank
                p.grad = torch.zeros_like(p)
        for p, g in zip(params, mean_over_ranks(self, [p.grad for p in params])):
            p.grad.copy_(g)

    def _update(self, optimizer, loss: torch.Tensor, net: nn.Module, generator_step: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        ddp = self._ddp()
        with ddp.no_sync() if ddp is not None else nullcontext():
            self.manual_backward(loss)
        self._all_reduce_grads(net)
        if generator_step:
            optimizer.step()  # through LightningOptimizer: counts toward trainer.global_step
        else:
            # Same precision-plugin path (GradScaler for 16-mixed, hooks), without counting a step.
            self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None, model=self)

    def _total_generator_steps(self) -> int:
        """The run's length in generator steps: ``max_steps``, else epochs x batches / n_critic."""
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            return self.trainer.max_steps
        return max(1, int(self.trainer.estimated_stepping_batches) // self.hparams.n_critic)

    def _schedule_lr(self, opt_g, opt_d) -> None:
        """Set both learning rates for the next steps; a function of ``global_step``, so resuming needs no state."""
        if self.hparams.lr_schedule == "constant":
            return
        factor = max(0.0, 1.0 - self.global_step / self._total_generator_steps())
        for opt, lr in ((opt_g, self.hparams.lr_g), (opt_d, self.hparams.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * factor

    def _check_finite(self, name: str, value: torch.Tensor) -> None:
        finite = bool(torch.isfinite(value).all())
        # Every rank must stop together, or the others would wait forever in the next all-reduce.
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        ckpt = self.trainer.checkpoint_callback
        last = ckpt.last_model_path if ckpt is not None else ""
        kept = (
            f"The last good checkpoint is {last} (from the end of the last finished epoch); it was not overwritten."
            if last and Path(last).is_file()
            else "No checkpoint was written yet (the run diverged in its first epoch)."
        )
        shown = f"{value.item()}" if not finite else "non-finite on another DDP rank"
        raise GANDivergedError(
            f"training diverged: {name} became {shown} "
            f"at generator step {self.global_step} (discriminator step {self.d_steps}, epoch {self.current_epoch + 1}); "
            f"stopped before the update. {kept} Lower the learning rates (--model.lr_d, --model.lr_g), try "
            f"--model.spectral_norm=true or --model.loss=hinge, or train in 32-true precision."
        )

    def training_step(self, batch, batch_idx):
        real = batch[0] if isinstance(batch, (list, tuple)) else batch  # (B, *in_shape); labels unused
        opt_g, opt_d = self.optimizers()
        loss, n = self.hparams.loss, len(real)

        # Discriminator step: the fakes are made without a graph, so only D gets gradients.
        with self._only(self.discriminator):
            with torch.no_grad():
                fake = self.generator(self._latent(n))  # (B, *in_shape)
            d_real, d_fake = self.discriminator(real), self.discriminator(fake)  # (B,), (B,)
            d_loss = discriminator_loss(loss, d_real, d_fake)
            if loss == "wgan-gp":
                eps = torch.rand((n,) + (1,) * (real.dim() - 1), generator=self._noise).to(self.device)  # (B, 1, ...)
                d_loss = d_loss + self.hparams.gp_weight * gradient_penalty(self.discriminator, real, fake, eps)
            if self.hparams.r1_weight > 0:
                d_loss = d_loss + 0.5 * self.hparams.r1_weight * r1_penalty(self.discriminator, real)
            self._check_finite("d_loss", d_loss)
            self._update(opt_d, d_loss, self.discriminator, generator_step=False)
        self.d_steps += 1
        self.log("train/d_loss", d_loss.detach(), prog_bar=True)
        if loss in ("wgan-gp", "hinge"):
            self.log("train/d_gap", (d_real.float().mean() - d_fake.float().mean()).detach())

        if self.d_steps % self.hparams.n_critic:
            return
        # Generator step: D's weights are frozen, so the backward pass reaches only G.
        with self._only(self.generator):
            g_loss = generator_loss(loss, self.discriminator(self.generator(self._latent(n))))
            self._check_finite("g_loss", g_loss)
            self._update(opt_g, g_loss, self.generator, generator_step=True)
        decay = ema_update(self.generator_ema, self.generator, self.hparams.ema_decay, self.global_step)
        self._schedule_lr(opt_g, opt_d)
        self.log("train/g_loss", g_loss.detach(), prog_bar=True)
        self.log("train/ema_decay", decay)

    # --- samples every epoch ---------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        if not self.trainer.is_global_zero or self.trainer.sanity_checking:
            return
        out = self._generate(self.fixed_z)  # (num_fixed, *in_shape)
        path = Path(self.trainer.default_root_dir) / "samples" / f"epoch-{self.current_epoch + 1:04d}.png"
        modes = getattr(getattr(self.trainer, "datamodule", None), "modes", None)
        render_samples(out, path, modes=modes() if modes else None, title=f"epoch {self.current_epoch + 1}, generator step {self.global_step}")

    # --- checkpoints -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._noise is None:  # saved outside fit: nothing drawn yet
            return
        state = self._noise.get_state()  # (5056,) uint8
        if self.trainer is not None and self.trainer.world_size > 1:
            states = self.all_gather(state.to(self.device)).cpu()  # (world, 5056): every rank's stream
        else:
            states = state.unsqueeze(0)  # (1, 5056)
        checkpoint["gan"] = {"noise_states": states, "rng_state": torch.get_rng_state(), "d_steps": self.d_steps}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("gan")
        if saved:
            self.d_steps = int(saved["d_steps"])
            self._restored = saved  # applied in on_fit_start, once the rank is known


def metric_kind(fid: str, shape: tuple[int, ...], data_name: str) -> str:
    """Which metrics a run gets: "modes" for 2-D points, else the FID flavour (or "none")."""
    if len(shape) == 1:
        return "modes"
    if fid == "auto":
        return "classifier" if data_name == "digits" else "inception"
    return fid


def render_samples(samples: torch.Tensor, path: Path, modes: torch.Tensor | None = None, title: str = "") -> None:
    """Write a PNG (atomically): an image grid for (N, C, H, W) in [-1, 1], a scatter plot for (N, 2)."""
    buf = io.BytesIO()
    samples = samples.detach().float().cpu()
    if samples.dim() == 2:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
        ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, label="samples")
        if modes is not None:
            ax.scatter(modes[:, 0], modes[:, 1], s=40, marker="x", color="red", label="true modes")
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=8)
        ax.legend(loc="upper right", fontsize=6)
        fig.tight_layout()
        fig.savefig(buf, format="png")
        plt.close(fig)
    else:
        from torchvision.utils import make_grid, save_image

        images = ((samples + 1.0) / 2.0).clamp(0.0, 1.0)  # (N, C, H, W) in [0, 1]
        if images.shape[-1] < 32:  # small images (8x8 digits): enlarge so the grid is legible
            images = F.interpolate(images, scale_factor=32 // images.shape[-1], mode="nearest")
        grid = make_grid(images, nrow=int(len(images) ** 0.5 + 0.5), padding=2, pad_value=1.0)  # (C, H', W')
        save_image(grid, buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


# --- after fit: metrics on the EMA generator ------------------------------------------------------
def _images01(dm, subset) -> torch.Tensor:
    x = torch.stack([subset[i][0] for i in range(len(subset))])  # (N, C, H, W), normalised
    return dm.denormalize(x).clamp(0.0, 1.0)


def evaluate(module: GAN, dm, n: int | None = None) -> dict[str, Any]:
    """The metrics for ``module``'s EMA generator on ``dm``'s kind of data (see :mod:`..metrics`)."""
    from .. import metrics

    n = n or module.hparams.num_eval_samples
    samples = module.sample(n)  # (n, *in_shape)
    kind = metric_kind(module.hparams.fid, module.in_shape, getattr(dm, "name", ""))
    dm.setup("fit")
    if kind == "modes":
        return {"kind": kind, **metrics.mode_metrics(samples, dm.modes(), dm.sigma)}
    if kind == "none":
        return {"kind": kind, "num_samples": n}
    fake = ((samples + 1.0) / 2.0).clamp(0.0, 1.0)  # (n, C, H, W) in [0, 1]
    real = _images01(dm, dm.train_set)
    if kind == "classifier":
        return {"kind": kind, **metrics.digits_metrics(fake, real, _images01(dm, dm.test_set))}
    weights = metrics.inception_weights(module.hparams.inception_weights)
    return {"kind": kind, "fid": metrics.inception_fid(fake, real[:n], weights), "num_samples": n, "num_real": min(n, len(real))}


def report_lines(result: dict[str, Any]) -> list[str]:
    kind, n = result["kind"], result["num_samples"]
    if kind == "modes":
        kl = "n/a" if result["reverse_kl"] is None else f"{result['reverse_kl']:.3f}"
        return [
            f"modes captured: {result['modes_captured']}/{result['num_modes']}, high-quality samples: "
            f"{result['high_quality_pct']:.1f}%, reverse KL: {kl} ({n} samples from the EMA generator)"
        ]
    if kind == "classifier":
        hist = " ".join(f"{p:.1f}" for p in result["class_pct"])
        return [
            f"Frechet distance (digits classifier features): {result['fd']:.2f} ({n} samples vs {result['num_real']} training images; "
            f"real test vs training images: {result['fd_real_baseline']:.2f})",
            f"confidently labelled (p >= 0.9): {result['confident_pct']:.1f}%; class histogram % (0-9): {hist}",
        ]
    if kind == "inception":
        return [f"Inception FID: {result['fid']:.2f} ({n} samples vs {result['num_real']} training images)"]
    return []


def after_fit(module: GAN, trainer: L.Trainer, dm, run_dir: Path) -> dict[str, Any]:
    """Recipe hook: metrics on ``num_eval_samples`` EMA samples, a final picture, report lines."""
    result = evaluate(module, dm)
    if trainer.is_global_zero:
        final = module.sample(module.num_fixed if len(module.in_shape) == 3 else module.hparams.num_eval_samples)
        modes = dm.modes() if hasattr(dm, "modes") else None
        render_samples(final, Path(run_dir) / "samples" / "final.png", modes=modes, title=f"EMA generator after {trainer.global_step} generator steps")
    lines = report_lines(result) + [f"samples: {Path(run_dir) / 'samples'}"]
    return {"gan_metrics": result, "generator_steps": trainer.global_step, "discriminator_steps": module.d_steps, "report": lines}


# --- the recipe's run: per-dataset training length -------------------------------------------------
# Epochs for `dlstrat fit --model gan` when neither --max-epochs nor --trainer.max_steps is given;
# each meets its target in docs/gan.md within the time budget on 2 CPU cores. Other datasets get
# the recipe's max_epochs.
DEFAULT_EPOCHS = {"ring8": 40, "grid25": 50, "digits": 300}  # 7,040 / 8,800 / 6,300 generator steps


def run(ctx) -> dict[str, Any]:
    """Recipe hook: :func:`lightning_dlstrat.run.fit_once` with the dataset's default length."""
    from ..data import DATAMODULES
    from ..run import fit_once

    if not {"max_epochs", "max_steps"} & set(ctx.trainer) and ctx.data_name in DEFAULT_EPOCHS:
        ctx.trainer = {**ctx.trainer, "max_epochs": DEFAULT_EPOCHS[ctx.data_name]}
    threads = torch.get_num_threads()
    dims = getattr(DATAMODULES.get(ctx.data_name), "dims", ()) or (0,)
    if prod(dims) <= 64 and "OMP_NUM_THREADS" not in os.environ:
        # Small networks (2-D points, 8x8 digits): on 2 shared cores two threads' OpenMP spinning
        # made a DCGAN digits step take 770 ms against 58 ms for one (50 vs 4 ms for the 2-D MLPs),
        # and one thread gives the same numbers on any machine (docs/gan.md, Threads).
        # OMP_NUM_THREADS, when set, wins.
        torch.set_num_threads(1)
    try:
        return fit_once(ctx, ctx.run_dir)
    finally:
        torch.set_num_threads(threads)


# --- `dlstrat sample` -------------------------------------------------------------------------------
def sample_checkpoint(checkpoint: str | Path, n: int, out: str | Path, seed: int = 0) -> Path:
    """Draw ``n`` samples from a GAN checkpoint's EMA generator into the PNG ``out``.

    Images become a grid; 2-D points a scatter plot over the true modes of the dataset the
    checkpoint was trained on. The checkpoint is read with ``weights_only=True``.
    """
    from ..data import DATAMODULES

    checkpoint, out = Path(checkpoint), Path(out)
    if n < 1:
        raise DlstratError(f"-n must be at least 1, not {n}")
    if out.suffix.lower() != ".png":
        raise DlstratError(f"--out {out} must name a .png file")
    if not checkpoint.is_file():
        raise DlstratError(f"checkpoint {checkpoint} does not exist")
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DlstratError(f"{checkpoint} is not a readable checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
    state = ckpt.get("state_dict", {}) if isinstance(ckpt, dict) else {}
    if not any(k.startswith("generator_ema.") for k in state) or "hyper_parameters" not in ckpt:
        raise DlstratError(f"{checkpoint} is not a GAN checkpoint (no EMA generator in it); sample from one written by `dlstrat fit --model gan`")
    module = GAN(**ckpt["hyper_parameters"])
    module.load_state_dict(state)
    samples = module.sample(n, seed=seed)  # (n, *in_shape)
    data = (ckpt.get("dlstrat") or {}).get("data")
    cls = DATAMODULES.get(data)
    modes = cls.modes() if cls is not None and hasattr(cls, "modes") and len(module.in_shape) == 1 else None
    step = ckpt.get("global_step", "?")
    render_samples(samples, out, modes=modes, title=f"{n} samples, EMA generator after {step} generator steps (seed {seed})")
    return out
