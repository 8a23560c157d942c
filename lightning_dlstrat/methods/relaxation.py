"""How a supernet turns alpha into the weights that mix each edge's operations, composed from the
search methods that are on (:mod:`lightning_dlstrat.methods.base`).

DARTS (Liu et al., ICLR 2019) mixes by softmax(alpha). A collapse fix may replace that map (one
method's ``mix``: Fair DARTS's sigmoid, GDAS's Gumbel sample, DrNAS's Dirichlet sample) and others
may change its result (``perturb``: DARTS-'s auxiliary skip, SDARTS-RS's noise).

Sampling and noise apply to training forwards only (``sample=True``); the weights the genotype is
read from (``sample=False``) are the deterministic ones. Random draws come from the stream
``seed``, set by the search module per step, phase and rank, and from there per cell type
(``cell``), so the normal and reduction cells draw independently, as every official code does,
and a search is reproducible and resumes exactly.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .base import SearchMethod

__all__ = ["Relaxation"]

_CELL_STRIDE = 1_000_000_007  # the random streams of cell types 0, 1, ... (far apart, so never shared)


class Relaxation:
    """Callable ``(alpha (E, O), sample, cell) -> mixing weights (E, O)``; the supernet's ``relaxation``."""

    def __init__(self, methods: Sequence[SearchMethod]):
        mixers = [m for m in methods if m.mixing]
        if len(mixers) > 1:
            raise ValueError(f"{' and '.join(m.name for m in mixers)} each replace softmax(alpha) by their own relaxation; choose one")
        self.mixer = mixers[0] if mixers else None
        self.perturbers = [m for m in methods if type(m).perturb is not SearchMethod.perturb]
        self.seed = 0  # this step's and phase's random stream (set by the search module)
        self.phase = "arch"  # "weights" during the weight step's forward

    @property
    def kind(self) -> str:
        return self.mixer.mixing if self.mixer is not None else "softmax"

    def cell_seed(self, cell: int) -> int:
        return (self.seed + _CELL_STRIDE * cell) % 2**62

    def __call__(self, alpha: torch.Tensor, sample: bool, cell: int = 0) -> torch.Tensor:
        # alpha: (E, O) float32 or float64 -> (E, O)
        seed = self.cell_seed(cell)
        w = self.mixer.mix(alpha, sample, seed) if self.mixer is not None else F.softmax(alpha, dim=-1)
        if sample:
            for method in self.perturbers:
                w = method.perturb(w, self.phase, seed + 1)
        return w

    def __repr__(self) -> str:
        return f"Relaxation({self.kind}, perturbed by {[m.name for m in self.perturbers]})"
