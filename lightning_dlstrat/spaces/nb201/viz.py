"""Pictures of NAS-Bench-201 cells (Dong & Yang, ICLR 2020): the cell DAG and the alpha heatmap.

Drawn with matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``: no ``pyplot``, no
GUI backend, no global figure state) and written atomically, like :mod:`lightning_dlstrat.viz`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ...core import save_figure
from .genotype import EDGES, NB201_OPS, NB201Genotype

__all__ = ["plot_nb201_alpha", "plot_nb201_cell"]

_COLORS = {"skip_connect": "#2ca02c", "nor_conv_1x1": "#9467bd", "nor_conv_3x3": "#1f77b4", "avg_pool_3x3": "#ff7f0e", "none": "#bbbbbb"}
# nodes on a line: edges between neighbours run straight along it, 0->2 and 0->3 arc above (0->3
# higher), 1->3 below, so no edge crosses a node and no two labels meet
_POS = {0: (0.0, 0.0), 1: (2.0, 0.0), 2: (4.0, 0.0), 3: (6.0, 0.0)}
_RAD = {(0, 2): -0.45, (0, 3): -0.5, (1, 3): 0.45}


def plot_nb201_cell(genotype: NB201Genotype, path: str | Path = "genotype.png", title: str | None = None) -> None:
    """The cell as a DAG, node 0 (input) to node 3 (output); ``none`` edges drawn faint and dashed."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch

    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.subplots()
    for s, t, op in genotype.edges():
        (x1, y1), (x2, y2) = _POS[s], _POS[t]
        rad = _RAD.get((s, t), 0.0)
        dead = op == "none"
        ax.add_patch(
            FancyArrowPatch(
                (x1, y1), (x2, y2), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=11,
                color=_COLORS[op], linestyle="--" if dead else "-", linewidth=0.9 if dead else 1.6, shrinkA=14, shrinkB=14, zorder=1,
            )
        )
        # label at the arc's midpoint (quadratic Bezier of matplotlib's arc3 path)
        mx, my = (x1 + x2) / 2 + 0.5 * rad * (y2 - y1), (y1 + y2) / 2 - 0.5 * rad * (x2 - x1)
        ax.text(mx, my, op, ha="center", va="center", fontsize=7, color="0.45" if dead else _COLORS[op], zorder=2,
                bbox=dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none", alpha=0.85))
    for n, xy in _POS.items():
        label = {0: "0 (in)", 3: "3 (out)"}.get(n, str(n))
        ax.text(*xy, label, ha="center", va="center", fontsize=9, zorder=3,
                bbox=dict(boxstyle="round,pad=0.35", facecolor="#cfe2f3" if n in (0, 3) else "#fff2cc", edgecolor="black"))
    ax.set_xlim(-0.8, 6.8)
    ax.set_ylim(-1.4, 2.0)
    ax.set_axis_off()
    ax.set_title(title if title is not None else str(genotype), fontsize=8)
    save_figure(fig, path)


def plot_nb201_alpha(weights: Any, path: str | Path = "alpha.png", operations: Sequence[str] = NB201_OPS, title: str | None = None) -> None:
    """A heatmap of the (6, O) edge weights (softmax of alpha), the argmax of each row outlined."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    w = torch.as_tensor(weights).detach().to("cpu", torch.float32)  # (6, O)
    if w.shape != (len(EDGES), len(operations)):
        raise ValueError(f"weights have shape {tuple(w.shape)}; expected ({len(EDGES)}, {len(operations)}) = (edges, operations)")
    fig = Figure(figsize=(1.2 + 1.1 * len(operations), 3.8))
    ax = fig.subplots()
    # colours span the weights' own range: early in a search (or after a short one) all sit near
    # 1/O and a 0..1 scale would show one flat colour; the printed numbers stay absolute
    vmin = float(w.min())
    vmax = max(float(w.max()), vmin + 1e-6)
    ax.imshow(w.numpy(), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    digits = 3 if vmax - vmin < 0.1 else 2
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            dark = float(w[i, j]) < vmin + 0.6 * (vmax - vmin)
            ax.text(j, i, f"{w[i, j]:.{digits}f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
        best = int(w[i].argmax())
        ax.add_patch(Rectangle((best - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.8))
    ax.set_xticks(range(len(operations)), list(operations), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(EDGES)), [f"{t}<-{s}" for s, t in EDGES], fontsize=8)
    ax.set_title(title or "NAS-Bench-201 edge weights (softmax of alpha)", fontsize=9)
    save_figure(fig, path)
