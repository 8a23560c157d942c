"""The package's pictures that belong to no search space: GAN sample grids and scatter plots, and the
collapse monitor's history. (Each search space draws its own cells: ``spaces/<name>/viz.py``.)

Matplotlib's Agg canvas directly (no ``pyplot``, so no GUI backend and no global figure state),
written atomically (:func:`lightning_dlstrat.core.save_figure`).

- :func:`render_samples`: GAN samples, an image grid for (N, C, H, W) or a scatter plot over the
  true modes for 2-D points.
- :func:`plot_collapse`: the R-DARTS eigenvalue and the skip connections kept, per epoch.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from .core import atomic_write_bytes, save_figure


def render_samples(samples: torch.Tensor, path: str | Path, modes: torch.Tensor | None = None, title: str = "", nrow: int | None = None) -> None:
    """Write a PNG (atomically): an image grid for (N, C, H, W) in [-1, 1], a scatter plot for (N, 2).

    ``nrow``: images per grid row (default: a square grid); one class per row for conditional samples.
    """
    samples = samples.detach().float().cpu()
    if samples.dim() == 2:
        fig = Figure(figsize=(4, 4))
        ax = fig.add_subplot()
        ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, label="samples")
        if modes is not None:
            ax.scatter(modes[:, 0], modes[:, 1], s=40, marker="x", color="red", label="true modes")
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=8)
        ax.legend(loc="upper right", fontsize=6)
        fig.tight_layout()
        save_figure(fig, path, bbox_inches=None)
        return
    from torchvision.utils import make_grid, save_image  # torchvision loads only when a grid is drawn

    images = ((samples + 1.0) / 2.0).clamp(0.0, 1.0)  # (N, C, H, W) in [0, 1]
    if images.shape[-1] < 32:  # small images (8x8 digits): enlarge so the grid is legible
        images = F.interpolate(images, scale_factor=32 // images.shape[-1], mode="nearest")
    grid = make_grid(images, nrow=nrow or int(len(images) ** 0.5 + 0.5), padding=2, pad_value=1.0)  # (C, H', W')
    buf = io.BytesIO()
    save_image(grid, buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def plot_collapse(history: Sequence[dict], path: str | Path = "collapse.png", title: str | None = None) -> bool:
    """The collapse monitor's history (R-DARTS, Zela et al. 2020): the dominant Hessian eigenvalue and
    the skip connections kept per cell type, against the epoch; written atomically. False (and no
    file) when no record has an eigenvalue (the monitor was off)."""
    records = [r for r in history if "eigenvalue" in r]
    if not records:
        return False
    epochs = [r["epoch"] for r in records]
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(epochs, [r["eigenvalue"] for r in records], marker="o")
    ax.set(xlabel="epoch", ylabel="dominant eigenvalue of d2 L_val / d alpha2", title="eigenvalue")
    stops = [r["early_stop"]["rolled_back_to_epoch"] for r in history if "early_stop" in r]
    for epoch in stops:
        ax.axvline(epoch, color="tab:red", linestyle="--", label=f"early stop: back to epoch {epoch}")
    if stops:
        ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    for cell in records[-1].get("skips", {}):
        ax.plot(epochs, [r["skips"].get(cell, 0) for r in records], marker="o", label=cell)
    ax.set(xlabel="epoch", ylabel="skip_connect kept", title="skip connections")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return True
