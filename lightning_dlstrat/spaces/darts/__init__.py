"""The DARTS cell search space (Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search",
ICLR 2019; PC-DARTS, Xu et al., ICLR 2020): everything of the space in this folder, behind
:class:`~lightning_dlstrat.spaces.base.SearchSpace`.

- :mod:`.ops`: the 8 candidate operations and the cells' preprocessing blocks (``PRIMITIVES``, ``OPS``);
- :mod:`.genotype`: ``Genotype``, its text / JSON / file forms, the published cells (``DARTS_V2``,
  ``PC_DARTS``, ...), the discretisation rule (``derive_genotype``: top-2 edges per node, ``none``
  excluded) and uniform sampling;
- :mod:`.search` / :mod:`.search_fast`: the supernet, per edge (the papers' code) and batched
  (the same function, much faster);
- :mod:`.network`: the evaluation network ``DARTSNetwork`` (bit-identical to quark0/darts);
- :mod:`.viz`: the alpha heatmaps and the cell diagrams.

The networks and pictures are imported when first used, so importing the space does not pull in
the Hub client or matplotlib.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ops import PRIMITIVES
from .genotype import Genotype, derive_genotype, num_edges, resolve_genotype, sample_genotype
from ..base import CellTopology, SearchSpace, as_alpha_list, check_choices, register_space

__all__ = ["DartsSpace"]


@register_space()
class DartsSpace(SearchSpace):
    """DARTS: two cell types (normal, reduce), each with 2 inputs and ``steps`` nodes (4 in the paper)."""

    name = "darts"
    genotype_class = Genotype
    cell_types = ("normal", "reduce")
    retrain_recipe = "darts-net"
    architecture = "darts_net"
    search_args = ("C", "layers", "steps", "multiplier", "stem_multiplier", "primitives", "partial_channels", "channels_last")
    search_arg_notes = {"partial_channels": "partial channels, PC-DARTS, are built into the DARTS supernet only"}

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
            from .search_fast import FastSearchNetwork

            return FastSearchNetwork(**config)
        if implementation == "reference":
            from .search import SearchNetwork

            return SearchNetwork(**config)
        raise ValueError(f"implementation must be 'fast' or 'reference', not {implementation!r}")

    def search_supernet(
        self, implementation: str, in_shape: Sequence[int], num_classes: int, *, C: int = 16, layers: int = 8, steps: int = 4,
        multiplier: int = 4, stem_multiplier: int = 3, primitives: Sequence[str] | None = None, partial_channels: int = 1,
        channels_last: bool = True,
    ) -> nn.Module:
        """The search module's supernet: ``FastSearchNetwork`` (with ``channels_last``) or ``SearchNetwork``."""
        if layers < 3:
            # reduction cells sit at layers // 3 and 2 * layers // 3: with 1 or 2 cells every cell
            # reduces, the normal alpha never receives a gradient, and its "searched" cell would be
            # read from untrained (uniform) weights
            raise ValueError(f"a DARTS search needs at least 3 cells (layers >= 3) so that a normal cell is searched; got layers={layers}")
        args = (C, num_classes, layers, steps, multiplier, stem_multiplier, primitives, in_shape, partial_channels)
        if implementation == "fast":
            from .search_fast import FastSearchNetwork

            return FastSearchNetwork(*args, channels_last=channels_last)
        if implementation == "reference":
            from .search import SearchNetwork

            return SearchNetwork(*args)
        raise ValueError(f"implementation must be 'fast' or 'reference', not {implementation!r}")

    def network(self, genotype: Genotype | str, **config: Any) -> nn.Module:
        """``DARTSNetwork(genotype, C=36, layers=20, num_classes=10, in_chans=3, ...)``."""
        from .network import DARTSNetwork

        return DARTSNetwork(genotype, **config)

    def discretise(self, alpha: torch.Tensor | Sequence[torch.Tensor]) -> Genotype:
        """``[alphas_normal, alphas_reduce]`` (and the PC-DARTS betas, if given) -> the genotype the
        supernet's ``genotype()`` gives: softmax over ops (times the edge normalisation with betas),
        then the DARTS rule of ``derive_genotype``."""
        from .search import edge_normalisation

        items = as_alpha_list(alpha, 2, self.name)
        weights = [F.softmax(a, dim=-1) for a in items[:2]]  # (E, O) each
        if len(items) >= 4:  # PC-DARTS: scale each edge's row by its normalised beta
            weights = [w * edge_normalisation(b, self.steps)[:, None] for w, b in zip(weights, items[2:4])]
        return derive_genotype(weights[0], weights[1], self.primitives, self.steps, self.multiplier)

    def sample(self, rng: random.Random) -> Genotype:
        return sample_genotype(rng, self.primitives, self.steps, self.multiplier)

    # --- the space as decisions: per cell and node, 2 distinct inputs ("0,1") and an op for each ----
    def choices(self) -> dict[str, tuple[str, ...]]:
        """``{"normal.n2.inputs": ("0,1",), "normal.n2.op0": (ops...), "normal.n2.op1": ..., ...}``.

        Node ``nK`` is state K (states 0 and 1 are the two previous cells, so the first node is
        ``n2``); its input pair is one decision, because two per-input decisions cannot draw
        distinct pairs uniformly without options that depend on each other, which Optuna refuses.
        ``op0`` goes with the lower input, ``op1`` with the higher; ops exclude ``none``, as
        :meth:`sample` (Li & Talwalkar's random search) does. These are the parameter names of
        random-nas's Optuna studies.
        """
        ops = tuple(p for p in self.primitives if p != "none")
        out: dict[str, tuple[str, ...]] = {}
        for cell in self.cell_types:
            for i in range(self.steps):
                key = f"{cell}.n{i + 2}"
                out[f"{key}.inputs"] = tuple(f"{a},{b}" for a, b in itertools.combinations(range(i + 2), 2))
                out[f"{key}.op0"] = out[f"{key}.op1"] = ops
        return out

    def from_choices(self, chosen: Mapping[str, str]) -> Genotype:
        options = self.choices()
        check_choices(chosen, options)
        concat = list(range(2 + self.steps - self.multiplier, self.steps + 2))
        cells = {}
        for cell in self.cell_types:
            pairs = []
            for i in range(self.steps):
                key = f"{cell}.n{i + 2}"
                a, b = (int(j) for j in chosen[f"{key}.inputs"].split(","))
                pairs += [(chosen[f"{key}.op0"], a), (chosen[f"{key}.op1"], b)]
            cells[cell] = pairs
        return Genotype(cells["normal"], concat, cells["reduce"], concat)

    # --- latency ------------------------------------------------------------------------------------
    def chosen_edges(self, genotype: Genotype) -> dict[str, list[tuple[int, str]]]:
        edges = self.topology.edges
        out: dict[str, list[tuple[int, str]]] = {}
        for cell, pairs in (("normal", genotype.normal), ("reduce", genotype.reduce)):
            # two (op, input) pairs per node, node i being state i + 2
            out[cell] = [(edges.index((j, k // 2 + 2)), op) for k, (op, j) in enumerate(pairs)]
        return out

    def with_op(self, genotype: Genotype, cell: str, k: int, op: str) -> Genotype:
        genotype = Genotype.coerce(genotype)
        pairs = {"normal": list(genotype.normal), "reduce": list(genotype.reduce)}
        pairs[cell][k] = (op, pairs[cell][k][1])  # chosen_edges lists the (op, input) pairs in order
        return Genotype(pairs["normal"], genotype.normal_concat, pairs["reduce"], genotype.reduce_concat)

    def latency_op(self, name: str, channels: int, stride: int) -> nn.Module:
        from .ops import OPS

        return OPS[name](channels, stride, True)  # affine, as in the evaluation network

    def latency_positions(self, net: nn.Module, in_shape: Sequence[int]) -> dict[str, list[list[tuple[int, int, int, int]]]]:
        seen: list[tuple[bool, tuple[int, ...]]] = []  # (reduction, the cell's preprocessed input shape), in network order
        hooks = [cell.preprocess1.register_forward_hook(lambda m, i, o, cell=cell: seen.append((cell.reduction, tuple(o.shape))))
                 for cell in net.cells]
        try:
            with torch.no_grad():
                net.eval()(torch.zeros(1, *in_shape, device=next(net.parameters()).device))
        finally:
            for h in hooks:
                h.remove()
        out: dict[str, list[list[tuple[int, int, int, int]]]] = {"normal": [], "reduce": []}
        for reduction, (_, c, h, w) in seen:
            ho, wo = ((h + 1) // 2, (w + 1) // 2) if reduction else (h, w)
            # an edge from a cell input (states 0, 1) strides in a reduction cell; one from a node runs at the output size
            out["reduce" if reduction else "normal"].append(
                [(c, h, w, 2) if reduction and j < 2 else (c, ho, wo, 1) if j >= 2 else (c, h, w, 1) for j, _ in self.topology.edges])
        return out

    def latency_rule(self) -> dict[str, Any]:
        edges = self.topology.edges
        nodes = [[e for e, (_, t) in enumerate(edges) if t == node] for node in range(2, self.steps + 2)]
        return {"kind": "top_k", "k": 2, "nodes": nodes, "exclude": ["none"]}

    def to_choices(self, genotype: Genotype) -> dict[str, str]:
        genotype = Genotype.coerce(genotype)
        concat = tuple(range(2 + self.steps - self.multiplier, self.steps + 2))
        if genotype.steps != self.steps or genotype.normal_concat != concat or genotype.reduce_concat != concat:
            raise ValueError(f"{genotype} is not in this space ({self.steps} nodes, output concatenating states {list(concat)})")
        out = {}
        for cell in self.cell_types:
            pairs = getattr(genotype, cell)
            for i in range(self.steps):
                (op_a, a), (op_b, b) = sorted(pairs[2 * i : 2 * i + 2], key=lambda p: p[1])
                if a == b or "none" in (op_a, op_b):
                    raise ValueError(f"{cell} node {i + 2} of {genotype} is outside the random-search space (2 distinct inputs, no 'none')")
                key = f"{cell}.n{i + 2}"
                out.update({f"{key}.inputs": f"{a},{b}", f"{key}.op0": op_a, f"{key}.op1": op_b})
        check_choices(out, self.choices())
        return out

    def resolve_genotype(self, value: Any) -> Genotype:
        """A built-in name (``DARTS_V2``), genotype text or JSON, a file or a run directory with ``genotype.json``."""
        return resolve_genotype(value)

    def chosen_ops(self, genotype: Genotype) -> dict[str, list[str]]:
        return {"normal": [op for op, _ in genotype.normal], "reduce": [op for op, _ in genotype.reduce]}

    def cap_skips(self, net: nn.Module, genotype: Genotype, cap: int) -> Genotype:
        """The normal cell only (reduction cells keep theirs, as P-DARTS): while it keeps more than
        ``cap`` skips, the kept skip of smallest weight is zeroed and both cells derived again."""
        if "skip_connect" not in net.operations:
            return genotype
        skip = list(net.operations).index("skip_connect")
        normal, reduce = (w.clone() for w in net.edge_weights())  # (E, O) each
        starts = [sum(k + 2 for k in range(i)) for i in range(net.steps)]  # first row of each node's edges
        while sum(op == "skip_connect" for op, _ in genotype.normal) > cap:
            rows = [starts[n // 2] + j for n, (op, j) in enumerate(genotype.normal) if op == "skip_connect"]
            weakest = min(rows, key=lambda r: float(normal[r, skip]))
            normal[weakest, skip] = 0.0
            genotype = derive_genotype(normal, reduce, net.primitives, net.steps, net.multiplier)
        return genotype

    def plot(self, genotype: Genotype, path: str | Path, title: str | None = None) -> None:
        from .viz import plot_genotype

        plot_genotype(genotype, path, title)

    def plot_alpha(self, weights: Mapping[str, torch.Tensor], operations: Sequence[str], path: str | Path, title: str | None = None) -> None:
        """Both cells' heatmaps side by side, the edges the genotype keeps outlined (``viz.plot_alpha``)."""
        from .viz import plot_alpha

        plot_alpha(weights["normal"], weights["reduce"], operations, path, title)

