"""The ``gan`` recipe: after fitting, the EMA generator's metrics, a final picture and report lines; and ``dlstrat sample``.

The metrics depend on the data (:mod:`lightning_dlstrat.metrics`): mode coverage and sample
quality for the 2-D mixtures, the Frechet distance in the bundled digits classifier's features
and the share of confidently classified samples for digits, Inception FID for other images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import metrics
from ..core import DlstratError
from ..data import DATAMODULES
from ..run import checkpoint_info, read_checkpoint
from ..trainers.gan import GAN, metric_kind
from ..viz import render_samples
from .base import Recipe


# --- after fit: metrics on the EMA generator ------------------------------------------------------
def _images01(dm, subset) -> torch.Tensor:
    x = torch.stack([subset[i][0] for i in range(len(subset))])  # (N, C, H, W), normalised
    return dm.denormalize(x).clamp(0.0, 1.0)


def evaluate(module: GAN, dm, n: int | None = None) -> dict[str, Any]:
    """The metrics for ``module``'s EMA generator on ``dm``'s kind of data (see :mod:`..metrics`)."""
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


def after_fit(module: GAN, trainer, dm, run_dir: Path) -> dict[str, Any]:
    """Metrics on ``num_eval_samples`` EMA samples, a final picture, report lines."""
    result = evaluate(module, dm)
    if trainer.is_global_zero:
        final = module.sample(module.num_fixed if len(module.in_shape) == 3 else module.hparams.num_eval_samples)
        modes = dm.modes() if hasattr(dm, "modes") else None
        render_samples(final, Path(run_dir) / "samples" / "final.png", modes=modes, title=f"EMA generator after {trainer.global_step} generator steps")
    lines = report_lines(result) + [f"samples: {Path(run_dir) / 'samples'}"]
    return {"gan_metrics": result, "generator_steps": trainer.global_step, "discriminator_steps": module.d_steps, "report": lines}


# --- `dlstrat sample` -------------------------------------------------------------------------------
def sample_checkpoint(checkpoint: str | Path, n: int, out: str | Path, seed: int = 0) -> Path:
    """Draw ``n`` samples from a GAN checkpoint's EMA generator into the PNG ``out``.

    Images become a grid; 2-D points a scatter plot over the true modes of the dataset the
    checkpoint was trained on. The checkpoint is read with ``weights_only=True``.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if n < 1:
        raise DlstratError(f"-n must be at least 1, not {n}")
    if out.suffix.lower() != ".png":
        raise DlstratError(f"--out {out} must name a .png file")
    ckpt = read_checkpoint(checkpoint)
    state = ckpt.get("state_dict", {})
    if not any(k.startswith("generator_ema.") for k in state) or "hyper_parameters" not in ckpt:
        raise DlstratError(f"{checkpoint} is not a GAN checkpoint (no EMA generator in it); sample from one written by `dlstrat fit --model gan`")
    try:
        module = GAN(**ckpt["hyper_parameters"])
        module.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as e:
        raise DlstratError(f"{checkpoint}: its GAN does not rebuild from its hyperparameters and weights ({str(e)[:300]})") from None
    samples = module.sample(n, seed=seed)  # (n, *in_shape)
    data = checkpoint_info(ckpt, checkpoint)["data"]
    cls = DATAMODULES.get(data)
    modes = cls.modes() if cls is not None and hasattr(cls, "modes") and len(module.in_shape) == 1 else None
    step = ckpt.get("global_step", "?")
    render_samples(samples, out, modes=modes, title=f"{n} samples, EMA generator after {step} generator steps (seed {seed})")
    return out


GAN_RECIPE = Recipe("gan", GAN, test=False, after_fit=after_fit)  # no test loop: the metrics come from after_fit
