"""Pictures of DARTS cells (Liu et al., ICLR 2019): the alpha heatmaps of both cell types and the cell diagrams.

The reference code (quark0/darts ``cnn/visualize.py``) draws cells with graphviz, which needs a
system binary many machines lack (pt.darts #44); here both pictures use matplotlib's Agg canvas
directly (no ``pyplot``, so no GUI backend and no global figure state) and are written atomically
(:func:`lightning_dlstrat.core.save_figure`).

- :func:`plot_alpha`: per-edge softmax weights of the normal and reduce cells as heatmaps
  (rows ``n2<-s0`` = edge from state 0 into node 2), with the ops the discretisation keeps boxed.
- :func:`plot_genotype`: both cells of a genotype as left-to-right DAGs, inputs ``c_{k-2}``,
  ``c_{k-1}`` (states s0, s1), intermediate nodes n2, n3, ... (numbered as the genotype's input
  indices), and the concatenated output ``c_{k}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from ...core import save_figure
from .genotype import Genotype, derive_genotype, num_edges
from .ops import PRIMITIVES

__all__ = ["edge_labels", "plot_alpha", "plot_genotype"]


def _steps_for(edges: int) -> int:
    steps = 0
    while num_edges(steps) < edges:
        steps += 1
    if num_edges(steps) != edges:
        raise ValueError(f"{edges} edges is not the edge count of a DARTS cell (2 + 3 + 4 + ... per node)")
    return steps


def edge_labels(steps: int) -> list[str]:
    """``["n2<-s0", "n2<-s1", "n3<-s0", ...]``: row labels in the supernet's edge order."""
    return [f"n{i + 2}<-s{j}" for i in range(steps) for j in range(i + 2)]


def plot_alpha(weights_normal: Any, weights_reduce: Any, primitives: Sequence[str] = PRIMITIVES, path: str | Path = "alpha.png", title: str | None = None) -> None:
    """Heatmaps of the (E, O) mixed-op weights (softmax of alpha) for both cells.

    Values are printed in each square; the (edge, op) pairs that :func:`derive_genotype` keeps
    are outlined, so the picture shows both the soft weights and the discrete cell they give.
    """
    mats = [torch.as_tensor(w).detach().to("cpu", torch.float32) for w in (weights_normal, weights_reduce)]  # (E, O) each
    for name, m in zip(("normal", "reduce"), mats):
        if m.dim() != 2 or m.shape[1] != len(primitives):
            raise ValueError(f"{name} weights have shape {tuple(m.shape)}; expected (edges, {len(primitives)} ops)")
    steps = _steps_for(mats[0].shape[0])
    genotype = derive_genotype(mats[0], mats[1], primitives, steps=steps, multiplier=steps)
    labels = edge_labels(steps)
    n_edges, n_ops = mats[0].shape
    fig = Figure(figsize=(2 * (1.2 + 0.62 * n_ops), 1.2 + 0.36 * n_edges))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, name, m, kept in zip(axes, ("normal cell", "reduce cell"), mats, (genotype.normal, genotype.reduce)):
        # colours span each panel's own range: early in a search all weights sit near 1/O and a
        # 0..1 scale would show one flat colour; the printed numbers stay absolute
        vmin, vmax = float(m.min()), float(m.max())
        vmax = max(vmax, vmin + 1e-6)
        im = ax.imshow(m.numpy(), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        digits = 3 if vmax - vmin < 0.1 else 2
        for e in range(n_edges):
            for o in range(n_ops):
                v = float(m[e, o])
                ax.text(o, e, f"{v:.{digits}f}", ha="center", va="center", fontsize=6.5 if digits == 2 else 5.5, color="black" if v > vmin + 0.6 * (vmax - vmin) else "white")
        # outline the kept ops: pair k of the genotype belongs to node k // 2 and reads state `j`
        for k, (op, j) in enumerate(kept):
            node = k // 2
            row = num_edges(node) + j  # (edges into earlier nodes) + input index
            ax.add_patch(Rectangle((primitives.index(op) - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.8))
        # separate the groups of edges feeding each node
        for i in range(1, steps):
            ax.axhline(num_edges(i) - 0.5, color="white", linewidth=1.5)
        ax.set_xticks(range(n_ops), list(primitives), rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n_edges), labels, fontsize=8)
        ax.set_title(name, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(title or "mixed-op weights softmax(alpha); red: kept by the discretisation", fontsize=10)
    save_figure(fig, path)


# colours per op family, so cells can be compared at a glance
_OP_COLORS = {"sep": "#1f77b4", "dil": "#9467bd", "max": "#d62728", "avg": "#ff7f0e", "ski": "#2ca02c", "non": "#7f7f7f"}


def _draw_cell(ax, pairs: Sequence[tuple[str, int]], concat: Sequence[int], title: str) -> None:
    steps = len(pairs) // 2
    # inputs on the left, nodes zigzagging up and down so that no edge runs through a node it
    # does not touch and edges from one source fan out at clearly different angles; output right
    pos = {0: (0.0, 0.8), 1: (0.0, -0.8)}
    for i in range(steps):
        pos[i + 2] = (2.0 * (i + 1), 1.6 if i % 2 == 0 else -1.6)
    out = (2.0 * (steps + 1), 0.0)
    # states numbered as in the genotype's input indices: s0, s1 the inputs, n2.. the nodes
    names = {0: "c_{k-2} (s0)", 1: "c_{k-1} (s1)", **{i + 2: f"n{i + 2}" for i in range(steps)}}

    def node(xy, text, color):
        ax.text(*xy, text, ha="center", va="center", fontsize=9, zorder=3, bbox=dict(boxstyle="round,pad=0.35", facecolor=color, edgecolor="black"))

    drawn: dict[tuple[int, int], int] = {}
    for k, (op, j) in enumerate(pairs):
        target = k // 2 + 2
        (x1, y1), (x2, y2) = pos[j], pos[target]
        repeat = drawn.get((j, target), 0)  # two ops on the same edge: bend the second one
        drawn[(j, target)] = repeat + 1
        rad = 0.25 * repeat * (1 if repeat % 2 else -1) + (0.15 if j >= 2 and target - j > 1 else 0.0)
        color = _OP_COLORS.get(op[:3], "black")
        ax.add_patch(FancyArrowPatch((x1, y1), (x2, y2), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=10, color=color, linewidth=1.3, shrinkA=14, shrinkB=12, zorder=1))
        # label on the curve: the quadratic Bezier midpoint of matplotlib's arc3 path, nudged
        # along the edge so that labels of edges leaving the same node do not overlap
        mx, my = (x1 + x2) / 2 + 0.5 * rad * (y2 - y1), (y1 + y2) / 2 - 0.5 * rad * (x2 - x1)
        t = 0.12 * ((k % 2) * 2 - 1)
        ax.text(mx + t * (x2 - x1), my + t * (y2 - y1), op, ha="center", va="center", fontsize=7, color=color, zorder=2, bbox=dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none", alpha=0.85))
    for s in concat:
        ax.add_patch(FancyArrowPatch(pos[s], out, arrowstyle="-|>", mutation_scale=8, color="0.55", linestyle="--", linewidth=0.9, shrinkA=12, shrinkB=14, zorder=0))
    for s, xy in pos.items():
        node(xy, names[s], "#cfe2f3" if s < 2 else "#fff2cc")
    node(out, "c_{k}", "#d9ead3")
    ax.set_xlim(-1.0, out[0] + 0.8)
    ax.set_ylim(-2.0, 2.0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)


def plot_genotype(genotype: Genotype, path: str | Path = "genotype.png", title: str | None = None) -> None:
    """Draw the normal and reduce cells of ``genotype`` one above the other."""
    steps = max(len(genotype.normal), len(genotype.reduce)) // 2
    fig = Figure(figsize=(2.0 + 2.1 * (steps + 1), 8.0))
    top, bottom = fig.subplots(2, 1)
    _draw_cell(top, genotype.normal, genotype.normal_concat, "normal cell")
    _draw_cell(bottom, genotype.reduce, genotype.reduce_concat, "reduce cell (ops on c_{k-2}, c_{k-1} have stride 2)")
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
