"""The DARTS cell search space behind the :class:`~lightning_dlstrat.spaces.base.SearchSpace` interface.

Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019 (and PC-DARTS, Xu et
al., ICLR 2020). A thin adapter: every piece is the existing implementation, imported unchanged
from :mod:`lightning_dlstrat.models` and :mod:`lightning_dlstrat.layers`:

- operations: ``layers.darts_ops.PRIMITIVES``; genotype: ``models.genotype.Genotype``;
- supernets: ``models.darts_search.SearchNetwork`` (reference) and
  ``models.darts_search_fast.FastSearchNetwork`` (fast);
- discretisation: ``models.genotype.derive_genotype`` (top-2 edges per node, ``none`` excluded);
- evaluation network: ``models.darts_net.DARTSNetwork``; sampling: ``sample_genotype``;
- picture: ``viz.plot_genotype``.

The evaluation network and the picture are imported when first used, so importing this module
does not pull in the hub or matplotlib.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.darts_ops import PRIMITIVES
from ..models.genotype import Genotype, derive_genotype, num_edges, sample_genotype
from .base import CellTopology, SearchSpace, as_alpha_list

__all__ = ["DartsSpace"]


class DartsSpace(SearchSpace):
    """DARTS: two cell types (normal, reduce), each with 2 inputs and ``steps`` nodes (4 in the paper)."""

    name = "darts"
    genotype_class = Genotype
    cell_types = ("normal", "reduce")

    def __init__(self, steps: int = 4, multiplier: int = 4, primitives: Sequence[str] = PRIMITIVES):
        self.steps, self.multiplier, self.primitives = steps, multiplier, tuple(primitives)

    @property
    def operations(self) -> tuple[str, ...]:
        return self.primitives

    @property
    def topology(self) -> CellTopology:
        # states 0, 1: the two previous cells; node i is state i + 2 and reads states 0 .. i + 1;
        # rows in the supernet's order (node 0's edges from states 0, 1, then node 1's, ...)
        edges = tuple((j, i + 2) for i in range(self.steps) for j in range(i + 2))
        assert len(edges) == num_edges(self.steps)
        outputs = tuple(range(2 + self.steps - self.multiplier, self.steps + 2))
        return CellTopology(num_nodes=self.steps + 2, inputs=(0, 1), edges=edges, outputs=outputs, combine="concat")

    def supernet(self, implementation: str = "fast", **config: Any) -> nn.Module:
        """``FastSearchNetwork`` ("fast") or ``SearchNetwork`` ("reference"); config as theirs (C, layers, in_shape, ...)."""
        config.setdefault("steps", self.steps)
        config.setdefault("multiplier", self.multiplier)
        config.setdefault("primitives", self.primitives)
        if implementation == "fast":
            from ..models.darts_search_fast import FastSearchNetwork

            return FastSearchNetwork(**config)
        if implementation == "reference":
            from ..models.darts_search import SearchNetwork

            return SearchNetwork(**config)
        raise ValueError(f"implementation must be 'fast' or 'reference', not {implementation!r}")

    def network(self, genotype: Genotype | str, **config: Any) -> nn.Module:
        """``DARTSNetwork(genotype, C=36, layers=20, num_classes=10, in_chans=3, ...)``."""
        from ..models.darts_net import DARTSNetwork

        return DARTSNetwork(genotype, **config)

    def discretise(self, alpha: torch.Tensor | Sequence[torch.Tensor]) -> Genotype:
        """``[alphas_normal, alphas_reduce]`` (and the PC-DARTS betas, if given) -> the genotype the
        supernet's ``genotype()`` gives: softmax over ops (times the edge normalisation with betas),
        then the DARTS rule of ``derive_genotype``."""
        from ..models.darts_search import edge_normalisation

        items = as_alpha_list(alpha, 2, self.name)
        weights = [F.softmax(a, dim=-1) for a in items[:2]]  # (E, O) each
        if len(items) >= 4:  # PC-DARTS: scale each edge's row by its normalised beta
            weights = [w * edge_normalisation(b, self.steps)[:, None] for w, b in zip(weights, items[2:4])]
        return derive_genotype(weights[0], weights[1], self.primitives, self.steps, self.multiplier)

    def sample(self, rng: random.Random) -> Genotype:
        return sample_genotype(rng, self.primitives, self.steps, self.multiplier)

    def plot(self, genotype: Genotype, path: str | Path, title: str | None = None) -> None:
        from ..viz import plot_genotype

        plot_genotype(genotype, path, title)
