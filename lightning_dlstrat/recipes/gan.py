"""The ``gan`` recipe: after fitting, the EMA generator's metrics, a final picture and report lines; and ``dlstrat sample``.

The metrics depend on the data (:mod:`lightning_dlstrat.metrics`): mode coverage and sample
quality for the 2-D mixtures; for digits FD / KID / IS in the bundled digits classifier's
features, the share of confidently classified samples and, for a conditional GAN, the share
labelled as the class asked for; Inception FID / KID / IS for other images. A conditional GAN is
measured on class-balanced samples (every class ``num_eval_samples / K`` times).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import metrics
from ..core import DlstratError, TooLarge, gib, shorten
from ..data import DATAMODULES
from ..models.gan_conditional import class_rows
from ..run import checkpoint_info, read_checkpoint
from ..trainers.gan import GAN, metric_kind
from ..viz import render_samples
from .base import Recipe


MAX_SAMPLES = 10_000  # samples `dlstrat sample` draws into one picture (a 100 x 100 grid)


# --- after fit: metrics on the EMA generator ------------------------------------------------------
def _images01(dm, subset) -> torch.Tensor:
    x = torch.stack([subset[i][0] for i in range(len(subset))])  # (N, C, H, W), normalised
    return dm.denormalize(x).clamp(0.0, 1.0)


def evaluate(module: GAN, dm, n: int | None = None) -> dict[str, Any]:
    """The metrics for ``module``'s EMA generator on ``dm``'s kind of data (see :mod:`..metrics`)."""
    n = n or module.hparams.num_eval_samples
    labels = module.balanced_labels(n) if module.num_classes else None  # (n,) or None
    samples = module.sample(n, labels=labels)  # (n, *in_shape)
    kind = metric_kind(module.hparams.fid, module.in_shape, getattr(dm, "name", ""))
    dm.setup("fit")
    if kind == "modes":
        return {"kind": kind, **metrics.mode_metrics(samples, dm.modes(), dm.sigma)}
    if kind == "none":
        return {"kind": kind, "num_samples": n}
    fake = ((samples + 1.0) / 2.0).clamp(0.0, 1.0)  # (n, C, H, W) in [0, 1]
    if dm.train_fraction < 1.0:
        # trained on a subset: measure against the whole training split, as full-data runs are
        dm = type(dm)(**{**dm.hparams, "train_fraction": 1.0})
        dm.setup("fit")
    real = _images01(dm, dm.train_set)
    if kind == "classifier":
        return {"kind": kind, **metrics.digits_metrics(fake, real, _images01(dm, dm.test_set), labels=labels)}
    weights = metrics.inception_weights(module.hparams.inception_weights)
    m = metrics.image_metrics(fake, real[:n], "inception", weights, device=module.device)
    return {"kind": kind, **m, "num_samples": n}


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
        lines = [
            f"digits-classifier features ({n} samples vs {result['num_real']} training images): FD {result['classifier_fd']:.2f}, "
            f"KID {result['classifier_kid']:.3f} +- {result['classifier_kid_std']:.3f}, IS {result['classifier_is']:.2f} +- {result['classifier_is_std']:.2f} "
            f"(real test vs training images: FD {result['classifier_fd_real_baseline']:.2f}, KID {result['classifier_kid_real_baseline']:.3f})",
            f"confidently labelled (p >= 0.9): {result['confident_pct']:.1f}%; class histogram % (0-9): {hist}",
        ]
        if "label_agreement_pct" in result:
            per_class = " ".join(f"{p:.0f}" for p in result["confident_per_class_pct"])
            lines.append(
                f"labelled as the class asked for: {result['label_agreement_pct']:.1f}% "
                f"(per class {min(result['label_agreement_per_class_pct']):.1f}-{max(result['label_agreement_per_class_pct']):.1f}%); "
                f"confident % per class asked for (0-9): {per_class}"
            )
        return lines
    if kind == "inception":
        return [
            f"Inception FID {result['fid']:.2f}, KID {result['kid']:.4f} +- {result['kid_std']:.4f}, IS {result['is']:.2f} +- {result['is_std']:.2f} "
            f"({n} samples vs {result['num_real']} training images)"
        ]
    return []


def after_fit(module: GAN, trainer, dm, run_dir: Path) -> dict[str, Any]:
    """Metrics on ``num_eval_samples`` EMA samples, a final picture, report lines."""
    result = evaluate(module, dm)
    if trainer.is_global_zero:
        n = module.num_fixed if len(module.in_shape) == 3 else module.hparams.num_eval_samples
        labels = module.fixed_y.cpu() if module.num_classes else None  # one row per class
        final = module.sample(n, labels=labels)
        modes = dm.modes() if hasattr(dm, "modes") else None
        render_samples(
            final, Path(run_dir) / "samples" / "final.png", modes=modes, nrow=n // module.num_classes if module.num_classes else None,
            title=f"EMA generator after {trainer.global_step} generator steps",
        )
    lines = report_lines(result) + [f"samples: {Path(run_dir) / 'samples'}"]
    return {"gan_metrics": result, "generator_steps": trainer.global_step, "discriminator_steps": module.d_steps, "report": lines}


# --- `dlstrat sample` -------------------------------------------------------------------------------
def generator_from_checkpoint(checkpoint: str | Path) -> tuple[nn.Module, str, str]:
    """The EMA generator of a GAN checkpoint (read with ``weights_only=True``), its dataset and a note on its training."""
    checkpoint = Path(checkpoint)
    ckpt = read_checkpoint(checkpoint)
    return generator_of(ckpt, checkpoint), checkpoint_info(ckpt, checkpoint)["data"], f"EMA generator after {ckpt.get('global_step', '?')} generator steps"


def generator_of(ckpt: dict[str, Any], checkpoint: Path) -> nn.Module:
    """The EMA generator in a GAN checkpoint already read (the recipe's ``network_from_checkpoint`` hook), in eval mode."""
    state = ckpt.get("state_dict", {})
    if not any(k.startswith("generator_ema.") for k in state) or "hyper_parameters" not in ckpt:
        raise DlstratError(f"{checkpoint} is not a GAN checkpoint (no EMA generator in it); sample from one written by `dlstrat fit --model gan`")
    try:
        module = GAN(**ckpt["hyper_parameters"])
        module.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as e:
        raise DlstratError(f"{checkpoint}: its GAN does not rebuild from its hyperparameters and weights ({str(e)[:300]})") from None
    return module.generator_ema.eval()


@torch.no_grad()
def draw_samples(net: nn.Module, n: int, out: str | Path, seed: int = 0, label: int | None = None, data: str = "", about: str = "") -> str:
    """Draw from a generator network into the PNG ``out``; returns what was drawn, in words.

    Images become a grid, 2-D points a scatter plot over the true modes of ``data``. A
    conditional generator (one with ``num_classes``) draws ``n`` samples of class ``label``, or
    without a label one row per class of ``ceil(n / K)`` samples. The latents are
    ``torch.randn(n, latent_dim)`` from ``torch.Generator().manual_seed(seed)``.
    """
    out = Path(out)
    if n < 1:
        raise DlstratError(f"-n must be at least 1, not {n}")
    if not 0 <= seed < 2**64:  # what torch.Generator.manual_seed takes
        raise DlstratError(f"--seed must be an integer in 0..2**64-1, not {shorten(seed, 60)}")
    if n > MAX_SAMPLES:
        shape = tuple(getattr(net, "out_shape", ()) or ())
        need = n * math.prod(shape) * 4 if shape else 0
        raise TooLarge(
            f"-n {n:,} samples is more than the {MAX_SAMPLES:,} one picture holds"
            + (f" (they alone would take {gib(need)} as float32 {'x'.join(map(str, shape))} samples)" if need else "")
            + "; draw several pictures with different --seed values"
        )
    if out.suffix.lower() != ".png":
        raise DlstratError(f"--out {out} must name a .png file")
    classes = getattr(net, "num_classes", 0)
    nrow, labels, what = None, None, f"{n} samples"
    if label is not None and not classes:
        raise DlstratError("this generator is unconditional: it takes no --class (train a conditional one with --model.conditional=true)")
    if label is not None and not 0 <= label < classes:
        raise DlstratError(f"--class must be a class of this generator, 0..{classes - 1}, not {label}")
    if classes:
        if label is None:
            nrow = -(-n // classes)  # ceil: one row per class
            labels = class_rows(classes, nrow)  # (K * nrow,)
            n, what = len(labels), f"{len(labels)} samples, one row of {nrow} per class 0-{classes - 1}"
        else:
            labels, what = torch.full((n,), label), f"{n} samples of class {label}"
    z = torch.randn(n, net.latent_dim, generator=torch.Generator().manual_seed(seed))  # (n, latent)
    net.eval()
    samples = net(z) if labels is None else net(z, labels)  # (n, *out_shape)
    cls = DATAMODULES.get(data)
    modes = cls.modes() if cls is not None and hasattr(cls, "modes") and samples.dim() == 2 else None
    render_samples(samples, out, modes=modes, nrow=nrow, title=f"{what}{', ' + about if about else ''} (latent seed {seed})")
    return what


def run_name(cfg) -> str:
    """``gan-DATA``, or ``gan-cond-DATA`` for a class-conditional GAN."""
    return f"gan-cond-{cfg.data}" if cfg.model_args.get("conditional") else f"gan-{cfg.data}"


# no test loop: the metrics come from after_fit; a checkpoint deploys its EMA generator
GAN_RECIPE = Recipe("gan", GAN, test=False, after_fit=after_fit, network_from_checkpoint=generator_of, run_name=run_name)
