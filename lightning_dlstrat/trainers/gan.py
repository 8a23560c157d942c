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

Two options change what the discriminator sees:

- ``conditional=True``: class-conditional networks (:mod:`~lightning_dlstrat.models.gan_conditional`:
  a conditional-BatchNorm generator ``G(z, y)`` and a projection discriminator ``D(x, y)``, Miyato
  & Koyama, ICLR 2018) on a labelled dataset. Real images are judged with their own labels; fake
  labels are drawn uniformly from the same per-rank noise stream as ``z``, so a resumed run draws
  the same ones. The penalties differentiate ``D(., y)`` with the labels held fixed.
- ``diffaugment="color,translation,cutout"`` (or any policy of :mod:`~lightning_dlstrat.diffaugment`):
  Zhao et al.'s DiffAugment (NeurIPS 2020) on every image the discriminator sees, real and fake,
  in both steps, with draws from the noise stream. R1 differentiates ``D(T(x))`` with respect to
  the un-augmented ``x``, as StyleGAN2-ADA does.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..diffaugment import diff_augment, parse_policy
from ..gan_losses import discriminator_loss, ema_update, generator_loss, get_loss, gradient_penalty, r1_penalty
from ..models.gan import build_gan_networks, resolve_arch
from ..models.gan_conditional import build_conditional_gan_networks, class_rows
from ..viz import render_samples
from ..core import DlstratError, destroy_gloo_group_at_exit, mean_over_ranks, planned_epochs, shorten

FID_CHOICES = ("auto", "classifier", "inception", "none")
LR_SCHEDULES = ("constant", "linear")


class GANDivergedError(DlstratError):
    """A loss became NaN or infinite; training stopped before the bad step touched the weights."""


class GAN(L.LightningModule):
    """A GAN on any dataset of this package; networks from :func:`~lightning_dlstrat.models.gan.build_gan_networks`.

    Example::

        dm = Ring8DataModule()
        gan = GAN(in_shape=dm.dims)
        L.Trainer(max_steps=5000).fit(gan, datamodule=dm)   # 5000 generator steps
        points = gan.sample(2500)                           # (2500, 2) from the EMA generator

        dm = DigitsDataModule(normalization="tanh")         # labelled images: class-conditional
        gan = GAN(in_shape=dm.dims, conditional=True, num_classes=dm.num_classes, r1_weight=1.0)
        L.Trainer(max_epochs=300).fit(gan, datamodule=dm)
        sevens = gan.sample(64, labels=7)                   # (64, 1, 8, 8) in [-1, 1]
    """

    # No validation metric: ModelCheckpoint keeps the latest epoch as best.ckpt as well as last.ckpt.
    monitor, mode = None, "min"

    def __init__(
        self,
        in_shape: tuple[int, ...] = (1, 8, 8),  # shape of one sample, from the datamodule
        arch: str = "auto",  # "auto" (mlp for vectors, dense under 16x16, dcgan for larger images), "dense", "dcgan" or "mlp"
        latent_dim: int = 100,  # 2 suits 2-D points (the ring8 / grid25 presets)
        width: int = 32,  # MLP hidden width / DCGAN base channels (dense nets: fixed classic widths); 32 trained 4x faster than 64 to the same quality
        loss: str = "ns",  # a name in gan_losses.LOSSES: "ns" (non-saturating), "hinge", "wgan-gp" or "lsgan"
        gp_weight: float = 10.0,  # lambda of the WGAN-GP penalty (loss="wgan-gp" only)
        r1_weight: float = 0.0,  # gamma of the R1 penalty on real data, 0: off (the digits and 2-D presets use 1)
        lr_g: float = 5e-4,  # generator learning rate (TTUR: set it apart from lr_d)
        lr_d: float = 5e-4,  # discriminator learning rate
        betas: tuple[float, float] | None = None,  # Adam betas; None: (0.5, 0.999), or (0.0, 0.9) for wgan-gp (Gulrajani et al.)
        n_critic: int | None = None,  # discriminator steps per generator step; None: 5 for wgan-gp, else 1
        lr_schedule: str = "linear",  # "constant", or "linear": both rates decay to 0 over the run's real length
        spectral_norm: bool = False,  # spectral normalisation on every discriminator layer
        ema_decay: float = 0.999,  # EMA of the generator (warm-up in ema_update); 0.99 for 2-D points
        noise_seed: int | None = None,  # seeds the latent noise; None: drawn from torch's (seeded) global RNG
        num_fixed: int | None = None,  # fixed latents drawn every epoch; None: 64 images / 2,500 points
        num_eval_samples: int = 2500,  # samples for the metrics after fit (PacGAN / VEEGAN use 2,500)
        fid: str = "auto",  # "auto": classifier FD on digits, Inception FID on other images; or "classifier", "inception", "none"
        inception_weights: str | None = None,  # local InceptionV3 weights file for offline FID
        conditional: bool = False,  # class-conditional networks (cBN generator, projection discriminator); needs labelled data
        num_classes: int = 0,  # classes of the labelled data (filled in from the datamodule); used when conditional
        diffaugment: str = "",  # DiffAugment policy on every image D sees, e.g. "translation" or "color,translation,cutout"; "": off
    ):
        super().__init__()
        objective = get_loss(loss)  # ValueError for an unknown loss, listing gan_losses.LOSSES
        if fid not in FID_CHOICES:
            raise ValueError(f"unknown fid {fid!r}; choose one of: {', '.join(FID_CHOICES)}")
        if noise_seed is None:
            noise_seed = int(torch.randint(2**31 - 1, (), device="cpu"))  # a number, also while config.check_size builds on "meta"
        arch = resolve_arch(arch, tuple(in_shape))  # ValueError before training for a bad arch / size
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {lr_schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}")
        betas = tuple(betas) if betas is not None else objective.betas
        n_critic = objective.n_critic if n_critic is None else n_critic
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, not {n_critic}")
        if conditional and num_classes < 2:
            raise ValueError(
                f"conditional=True needs labelled data with at least 2 classes (got num_classes={num_classes}); "
                f"the 2-D mixtures have no labels: train a conditional GAN on digits, mnist, cifar10 or an image folder"
            )
        self.policy = parse_policy(diffaugment)  # ValueError for an unknown augmentation, before training
        if self.policy and len(in_shape) != 3:
            raise ValueError(f"DiffAugment augments images; the data has shape {tuple(in_shape)}: drop --model.diffaugment")
        self.save_hyperparameters()
        # The resolved values, so a checkpoint records what actually ran.
        self.hparams.update(
            arch=arch, noise_seed=noise_seed, betas=list(betas), n_critic=n_critic, in_shape=list(in_shape),
        )
        self.automatic_optimization = False

        self.in_shape = tuple(in_shape)
        self.arch = arch
        self.num_classes = num_classes if conditional else 0
        build = partial(build_conditional_gan_networks, num_classes=num_classes) if conditional else build_gan_networks
        self.generator, self.discriminator = build(self.arch, self.in_shape, latent_dim, width, spectral_norm=spectral_norm)
        self.generator_ema = build(self.arch, self.in_shape, latent_dim, width)[0]
        self.generator_ema.load_state_dict(self.generator.state_dict())
        self.generator_ema.requires_grad_(False).eval()

        # The picture every epoch: 64 images (conditional: one row of 8 per class), or 2,500 points.
        self.num_fixed = num_fixed or (2500 if len(self.in_shape) == 1 else 8 * self.num_classes if conditional else 64)
        if conditional and self.num_fixed % num_classes:
            raise ValueError(f"num_fixed={self.num_fixed} must be a multiple of the {num_classes} classes: the picture has one row per class")
        g = torch.Generator().manual_seed(noise_seed)
        self.register_buffer("fixed_z", torch.randn(self.num_fixed, latent_dim, generator=g))  # (num_fixed, latent)
        # class of each fixed latent, row r of the grid being class r; derived, so not in checkpoints
        fixed_y = class_rows(self.num_classes, self.num_fixed // self.num_classes) if conditional else torch.zeros(0, dtype=torch.long)
        self.register_buffer("fixed_y", fixed_y, persistent=False)  # (num_fixed,) or (0,)
        self._noise: torch.Generator | None = None  # training latents; made per rank in on_fit_start
        self._restored: dict | None = None
        self.d_steps = 0  # discriminator steps taken (trainer.global_step counts generator steps)

    # --- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, n: int, seed: int | None = None, ema: bool = True, batch_size: int = 1000, labels: int | torch.Tensor | None = None
    ) -> torch.Tensor:
        """``n`` samples (n, *in_shape) in data space ([-1, 1] for images) from the EMA generator.

        Conditional GANs take ``labels``: one class for all, an (n,) tensor, or None for
        ``balanced_labels(n)`` (every class equally often, in order).
        """
        g = torch.Generator().manual_seed(self.hparams.noise_seed + 1 if seed is None else seed)
        z = torch.randn(n, self.hparams.latent_dim, generator=g)  # (n, latent)
        return self._generate(z, self._labels(n, labels), ema, batch_size)

    def balanced_labels(self, n: int) -> torch.Tensor:
        """(n,) classes 0, 1, ..., K-1, 0, 1, ...: each class n / K times (the metrics' protocol)."""
        return torch.arange(n) % self.num_classes  # (n,)

    def _labels(self, n: int, labels: int | torch.Tensor | None) -> torch.Tensor | None:
        if not self.num_classes:
            if labels is not None:
                raise DlstratError("this GAN is unconditional: it takes no class labels (train one with --model.conditional=true)")
            return None
        if labels is None:
            return self.balanced_labels(n)
        y = torch.full((n,), labels) if isinstance(labels, int) else torch.as_tensor(labels).long()  # (n,)
        if y.shape != (n,) or bool((y < 0).any() | (y >= self.num_classes).any()):
            raise DlstratError(f"class labels must be {n} integers in 0..{self.num_classes - 1}, not {shorten(labels, 80)}")
        return y

    @torch.no_grad()
    def _generate(self, z: torch.Tensor, y: torch.Tensor | None = None, ema: bool = True, batch_size: int = 1000) -> torch.Tensor:
        net = self.generator_ema if ema else self.generator
        was_training = net.training
        net.eval()
        ys = y.split(batch_size) if y is not None else [None] * len(z.split(batch_size))
        out = torch.cat([self._call_g(net, zc.to(self.device), yc) for zc, yc in zip(z.split(batch_size), ys)]).float()  # (n, *in_shape)
        net.train(was_training)
        return out

    def _call_g(self, net: nn.Module, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return net(z) if y is None else net(z, y.to(z.device))  # (B, *in_shape)

    def _call_d(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """D(T(x)[, y]): augmented (DiffAugment) when a policy is set; draws from the noise stream."""
        if self.policy:
            x = diff_augment(x, self.policy, self._noise)  # (B, C, H, W)
        return self.discriminator(x) if y is None else self.discriminator(x, y)  # (B,) logits

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self._call_g(self.generator_ema, z, y)  # (B, latent)[, (B,)] -> (B, *in_shape)

    def export_network(self) -> nn.Module:
        """The network a Hub export publishes: the EMA generator, as sampling and the metrics use."""
        return self.generator_ema

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
        if self.num_classes and getattr(dm, "num_classes", 0) != self.num_classes:
            raise DlstratError(
                f"the conditional GAN was built for {self.num_classes} classes, but {getattr(dm, 'name', 'the datamodule')} has "
                f"{getattr(dm, 'num_classes', 0) or 'no'} labels; a conditional GAN needs the labelled dataset it was built for"
            )
        if stage == "fit":
            self._check_metrics_available(dm)
            self._check_batches(dm)

    def _check_batches(self, dm) -> None:
        """A last training batch of one sample would stop training with a BatchNorm error mid-epoch."""
        dm.setup("fit")
        size, batch = len(getattr(dm, "train_set", None) or ()), getattr(dm, "batch_size", 0)
        if batch and size > batch and size % batch == 1 and not getattr(dm, "drop_last", False):
            raise DlstratError(
                f"the training split has {size} samples, so with batch size {batch} every epoch ends in a batch of one, "
                f"which BatchNorm cannot train on: add --data.drop_last=true, or choose another --data.batch_size"
            )

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

    def _fake_labels(self, n: int) -> torch.Tensor | None:
        """Uniform classes for the fakes (None when unconditional), from the per-rank noise stream."""
        if not self.num_classes:
            return None
        return torch.randint(self.num_classes, (n,), generator=self._noise).to(self.device)  # (n,)

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
        """The run's real length in generator steps: the fewer of ``max_steps`` and epochs x batches / n_critic."""
        n_critic = self.hparams.n_critic
        by_epochs = planned_epochs(self.trainer, steps_per_batch=1 / n_critic) * self.trainer.num_training_batches // n_critic
        max_steps = self.trainer.max_steps
        return max(1, min(by_epochs, max_steps) if max_steps not in (None, -1) else by_epochs)

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
        real = batch[0] if isinstance(batch, (list, tuple)) else batch  # (B, *in_shape)
        y_real = batch[1] if self.num_classes else None  # (B,) labels, used only by a conditional GAN
        opt_g, opt_d = self.optimizers()
        loss, n = self.hparams.loss, len(real)
        objective = get_loss(loss)

        # Discriminator step: the fakes are made without a graph, so only D gets gradients.
        with self._only(self.discriminator):
            with torch.no_grad():
                y_fake = self._fake_labels(n)  # (B,) or None
                fake = self._call_g(self.generator, self._latent(n), y_fake)  # (B, *in_shape)
            d_real, d_fake = self._call_d(real, y_real), self._call_d(fake, y_fake)  # (B,), (B,)
            d_loss = discriminator_loss(loss, d_real, d_fake)
            critic = partial(self._call_d, y=y_real)  # x -> D(T(x), y_real): the penalties hold the labels fixed
            if objective.gradient_penalty:
                eps = torch.rand((n,) + (1,) * (real.dim() - 1), generator=self._noise).to(self.device)  # (B, 1, ...)
                d_loss = d_loss + self.hparams.gp_weight * gradient_penalty(critic, real, fake, eps)
            if self.hparams.r1_weight > 0:
                d_loss = d_loss + 0.5 * self.hparams.r1_weight * r1_penalty(critic, real)
            self._check_finite("d_loss", d_loss)
            self._update(opt_d, d_loss, self.discriminator, generator_step=False)
        self.d_steps += 1
        self.log("train/d_loss", d_loss.detach(), prog_bar=True)
        if objective.unbounded_scores:
            self.log("train/d_gap", (d_real.float().mean() - d_fake.float().mean()).detach())

        if self.d_steps % self.hparams.n_critic:
            return
        # Generator step: D's weights are frozen, so the backward pass reaches only G.
        with self._only(self.generator):
            y_fake = self._fake_labels(n)  # (B,) or None
            g_loss = generator_loss(loss, self._call_d(self._call_g(self.generator, self._latent(n), y_fake), y_fake))
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
        out = self._generate(self.fixed_z, self.fixed_y if self.num_classes else None)  # (num_fixed, *in_shape)
        path = Path(self.trainer.default_root_dir) / "samples" / f"epoch-{self.current_epoch + 1:04d}.png"
        modes = getattr(getattr(self.trainer, "datamodule", None), "modes", None)
        render_samples(
            out, path, modes=modes() if modes else None, nrow=self.num_fixed // self.num_classes if self.num_classes else None,
            title=f"epoch {self.current_epoch + 1}, generator step {self.global_step}",
        )

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
