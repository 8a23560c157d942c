"""The package's pictures that belong to no search space: GAN sample grids and scatter plots, and the
collapse monitor's history. (Each search space draws its own cells: ``spaces/<name>/viz.py``.)

Matplotlib's Agg canvas directly (no ``pyplot``, so no GUI backend and no global figure state),
written atomically (:func:`lightning_dlstrat.core.save_figure`).

- :func:`render_samples`: GAN samples, an image grid for (N, C, H, W) or a scatter plot over the
  true modes for 2-D points.
- :func:`plot_collapse`: the R-DARTS eigenvalue and the skip connections kept, per epoch.
- :func:`plot_alpha_history`: a search's architecture weights per operation, per epoch, per cell type.
- :func:`plot_learning_curves`: every run's loss and accuracy per epoch (train, val, test), from its
  ``metrics.csv``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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


def plot_alpha_history(history: Sequence[dict], path: str | Path = "alpha_history.png", title: str | None = None) -> bool:
    """How the architecture weights moved during a search: for each cell type (``alpha_CELL`` in the
    records of ``genotype_history.jsonl``), each operation's softmax weight averaged over the cell's
    edges, against the epoch; written atomically. False (and no file) when no record holds alpha."""
    records = [r for r in history if any(k.startswith("alpha_") for k in r)]
    if not records:
        return False
    cells = [k.removeprefix("alpha_") for k in records[-1] if k.startswith("alpha_")]
    primitives = records[-1].get("primitives") or []
    epochs = [r["epoch"] + 1 for r in records]  # counted from 1, as the progress lines
    fig = Figure(figsize=(4.2 * len(cells), 3.4))
    for i, cell in enumerate(cells):
        ax = fig.add_subplot(1, len(cells), i + 1)
        per_epoch = torch.tensor([r[f"alpha_{cell}"] for r in records]).mean(dim=1)  # (epochs, E, O) -> (epochs, O)
        for o in range(per_epoch.shape[1]):
            name = primitives[o] if o < len(primitives) else f"op {o}"
            ax.plot(epochs, per_epoch[:, o].tolist(), label=name, marker="o" if len(epochs) <= 30 else None, markersize=3)
        ax.set(xlabel="epoch", ylabel="mean softmax(alpha) over edges", title=f"{cell} cell")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return True


SPLITS = ("train", "val", "test")  # the prefixes of the metrics a learning curve draws, in this order
_STYLE = {"train": dict(color="tab:blue"), "val": dict(color="tab:orange"), "test": dict(color="tab:green", marker="o", linestyle="none")}


def epoch_curves(metrics_csv: str | Path) -> dict[str, dict[int, float]]:
    """Per-epoch values of the ``SPLIT/NAME`` columns of a Lightning ``metrics.csv`` (SPLIT: train, val, test).

    A value logged per step (``train/loss``) is averaged over its epoch; one logged per epoch is
    taken as it is. Names of three parts or more (DARTS's per-edge alpha) are left out.
    """
    sums: dict[str, dict[int, list[float]]] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            try:
                epoch = int(float(row.get("epoch") or "nan"))
            except ValueError:
                continue
            for name, value in row.items():
                if not name or name.count("/") != 1 or name.split("/")[0] not in SPLITS or value in (None, ""):
                    continue
                try:
                    number = float(value)
                except ValueError:
                    continue
                if math.isfinite(number):
                    sums.setdefault(name, {}).setdefault(epoch, []).append(number)
    return {name: {e: sum(v) / len(v) for e, v in sorted(per.items())} for name, per in sums.items()}


def plot_learning_curves(metrics_csv: str | Path, path: str | Path = "learning_curves.png", title: str | None = None) -> bool:
    """The run's learning curves from its ``metrics.csv``: one panel for the losses, one for the
    accuracies (train and val per epoch, test as a point after the last epoch); written atomically.

    Metrics named ``SPLIT/...loss`` go to the loss panel (a GAN's ``train/d_loss`` and
    ``train/g_loss`` too), ``SPLIT/...acc`` to the accuracy panel. False (and no file) when the
    log holds neither (a run stopped before its first logged step).
    """
    curves = epoch_curves(metrics_csv)
    panels = [(kind, sorted((n for n in curves if n.split("/")[1].endswith(kind)), key=lambda n: (SPLITS.index(n.split("/")[0]), n)))
              for kind in ("loss", "acc")]
    panels = [(kind, names) for kind, names in panels if names]
    if not panels:
        return False
    fig = Figure(figsize=(4.2 * len(panels), 3.2))
    for i, (kind, names) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name in names:
            split = name.split("/")[0]
            epochs, values = zip(*curves[name].items())
            style = dict(_STYLE[split])
            if len(epochs) <= 30 and "marker" not in style:
                style.update(marker="o", markersize=3)
            if len({n.split("/")[0] for n in names}) < len(names):  # several losses of one split (a GAN's d and g)
                style.pop("color", None)
            label = f"{name} (after training)" if split == "test" else name
            ax.plot([e + 1 for e in epochs], values, label=label, **style)  # epochs counted from 1, as the progress lines
        ax.set(xlabel="epoch", ylabel="accuracy" if kind == "acc" else "loss", title="accuracy" if kind == "acc" else "loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return True
