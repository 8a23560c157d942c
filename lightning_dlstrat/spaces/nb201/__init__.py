"""The NAS-Bench-201 cell search space (Dong & Yang, "NAS-Bench-201: Extending the Scope of
Reproducible Neural Architecture Search", ICLR 2020; the NATS-Bench topology space).

- :mod:`.genotype`: the 4-node / 6-edge cell, its benchmark string form, parsing and sampling;
- :mod:`.ops`: the 5 operations and the residual reduction block;
- :mod:`.network`: the evaluation network (benchmark skeleton, parameter counts as published);
- :mod:`.search` / :mod:`.search_fast`: the DARTS supernet, per-edge and batched;
- :mod:`.viz`: cell and alpha pictures;
- :class:`NB201Space`: all of it behind :class:`lightning_dlstrat.spaces.base.SearchSpace`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..base import CellTopology, SearchSpace, as_alpha_list, check_choices, register_space
from .genotype import (
    ALL_CONV3X3,
    ALL_SKIP,
    BEST_CIFAR100,
    EDGES,
    MAX_TEXT,
    NB201_OPS,
    NUM_NODES,
    NB201Genotype,
    NB201GenotypeError,
    edge_row,
    sample_nb201,
)
from .network import MIN_INPUT_SIZE, NB201Cell, NB201Network
from .search import NB201SearchNetwork
from .search_fast import FastNB201SearchNetwork, edge_tensor_pairs

__all__ = [
    "ALL_CONV3X3",
    "ALL_SKIP",
    "BEST_CIFAR100",
    "EDGES",
    "MAX_TEXT",
    "NB201_OPS",
    "FastNB201SearchNetwork",
    "NB201Cell",
    "NB201Genotype",
    "NB201GenotypeError",
    "NB201Network",
    "NB201SearchNetwork",
    "NB201Space",
    "edge_row",
    "edge_tensor_pairs",
    "sample_nb201",
]


@register_space("nas-bench-201", "nasbench201", "nats-tss", "nats-bench")
class NB201Space(SearchSpace):
    """NAS-Bench-201: one cell type, 4 nodes, 6 edges, 5 operations (15,625 cells).

    Example::

        space = NB201Space()
        net = space.supernet(C=16, N=5)              # the fast supernet
        g = space.discretise(net.arch_parameters())  # == net.genotype()
        model = space.network(g, num_classes=100)    # the benchmark's CIFAR-100 network
    """

    name = "nb201"
    genotype_class = NB201Genotype
    cell_types = ("cell",)
    retrain_recipe = "nb201-net"
    architecture = "nb201_net"
    search_args = ("C", "N", "primitives")

    @property
    def operations(self) -> tuple[str, ...]:
        return NB201_OPS

    @property
    def topology(self) -> CellTopology:
        return CellTopology(num_nodes=NUM_NODES, inputs=(0,), edges=EDGES, outputs=(NUM_NODES - 1,), combine="identity")

    def supernet(self, implementation: str = "fast", **config: Any) -> nn.Module:
        """``NB201SearchNetwork`` ("reference") or ``FastNB201SearchNetwork`` ("fast"); config: C, N,
        num_classes, in_chans, operations, affine, track_running_stats."""
        if implementation == "fast":
            return FastNB201SearchNetwork(**config)
        if implementation == "reference":
            return NB201SearchNetwork(**config)
        raise ValueError(f"implementation must be 'fast' or 'reference', not {implementation!r}")

    def search_supernet(
        self, implementation: str, in_shape: Sequence[int], num_classes: int, *, C: int = 16, N: int = 5, primitives: Sequence[str] | None = None,
    ) -> nn.Module:
        """The benchmark's DARTS supernet for ``in_shape`` = (channels, height, width) images; ``primitives``
        is the candidate operations (None: all 5). Its cells' BatchNorms are the benchmark's search
        default (no affine parameters, no running statistics)."""
        if len(in_shape) != 3:
            raise ValueError(f"in_shape must be (channels, height, width), got {tuple(in_shape)}: the NAS-Bench-201 supernet takes images")
        if min(in_shape[1:]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"a {in_shape[1]}x{in_shape[2]} input is too small: the NAS-Bench-201 skeleton halves the resolution twice, "
                f"so height and width must be at least {MIN_INPUT_SIZE}"
            )
        return self.supernet(implementation, C=C, N=N, num_classes=num_classes, in_chans=in_shape[0], operations=primitives)

    def network(self, genotype: NB201Genotype | str, **config: Any) -> NB201Network:
        """``NB201Network(genotype, C=16, N=5, num_classes=10, in_chans=3)``."""
        return NB201Network(genotype, **config)

    def discretise(self, alpha: torch.Tensor | Sequence[torch.Tensor], operations: Sequence[str] = NB201_OPS, include_none: bool = True) -> NB201Genotype:
        """Row-wise argmax of the (6, O) alpha, ``none`` included (the benchmark's DARTS rule)."""
        (a,) = as_alpha_list(alpha, 1, self.name)[:1]
        return NB201Genotype.from_alpha(a, tuple(operations), include_none=include_none)

    def sample(self, rng: random.Random) -> NB201Genotype:
        return sample_nb201(rng)

    # --- the space as decisions: one op per edge, "none" included (the benchmark's 15,625 cells) ----
    def choices(self) -> dict[str, tuple[str, ...]]:
        """``{"cell/1<-0": NB201_OPS, "cell/2<-0": ..., ..., "cell/3<-2": ...}``, edges in alpha's row order."""
        return {_edge_key(s, t): NB201_OPS for s, t in EDGES}

    def from_choices(self, chosen: Mapping[str, str]) -> NB201Genotype:
        check_choices(chosen, self.choices())
        return NB201Genotype(tuple(chosen[_edge_key(s, t)] for s, t in EDGES))

    def to_choices(self, genotype: NB201Genotype | str) -> dict[str, str]:
        genotype = NB201Genotype.parse(genotype) if isinstance(genotype, str) else genotype  # text only, never a file
        return {_edge_key(s, t): op for s, t, op in genotype.edges()}

    # --- latency ------------------------------------------------------------------------------------
    def chosen_edges(self, genotype: NB201Genotype) -> dict[str, list[tuple[int, str]]]:
        edges = self.topology.edges
        return {"cell": [(edges.index((source, target)), op) for source, target, op in NB201Genotype.resolve(genotype).edges()]}

    def with_op(self, genotype: NB201Genotype, cell: str, k: int, op: str) -> NB201Genotype:
        ops = list(NB201Genotype.resolve(genotype).ops)  # chosen_edges lists every edge, in this order
        ops[k] = op
        return NB201Genotype(tuple(ops))

    def reconnections(self, genotype: NB201Genotype) -> list[list[tuple[str, int]]]:
        genotype = NB201Genotype.resolve(genotype)
        if genotype.connected:
            return []
        paths: list[list[int]] = []  # every path node 0 -> node 3, as edge rows (4 of them)

        def walk(node: int, path: list[int]) -> None:
            if node == NUM_NODES - 1:
                paths.append(path)
                return
            for k, (source, target) in enumerate(EDGES):
                if source == node:
                    walk(target, path + [k])

        walk(0, [])
        return [[("cell", k) for k in path if genotype.ops[k] == "none"] for path in paths]

    def latency_op(self, name: str, channels: int, stride: int) -> nn.Module:
        from .ops import make_op

        return make_op(name, channels, True, True)  # NB201 cells never stride

    def latency_positions(self, net: nn.Module, in_shape: Sequence[int]) -> dict[str, list[list[tuple[int, int, int, int]]]]:
        seen: list[tuple[int, ...]] = []
        cells = [m for m in net.modules() if isinstance(m, NB201Cell)]
        hooks = [cell.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape))) for cell in cells]
        try:
            with torch.no_grad():
                net.eval()(torch.zeros(1, *in_shape, device=next(net.parameters()).device))
        finally:
            for h in hooks:
                h.remove()
        return {"cell": [[(c, h, w, 1) for _ in self.topology.edges] for (_, c, h, w) in seen]}

    def latency_rule(self) -> dict[str, Any]:
        return {"kind": "all"}  # every edge is kept, with its argmax operation (none included: it costs nothing)

    def resolve_genotype(self, value: Any) -> NB201Genotype:
        """The benchmark's string or the JSON form, a ``genotype.json`` / ``genotype.txt`` file, or a run directory holding one."""
        return NB201Genotype.resolve(value)

    def chosen_ops(self, genotype: NB201Genotype) -> dict[str, list[str]]:
        return {"cell": list(genotype.ops)}

    def cap_skips(self, net: nn.Module, genotype: NB201Genotype, cap: int) -> NB201Genotype:
        """While the cell keeps more than ``cap`` skips, the skip edge of smallest weight has that
        weight zeroed and its edge takes its next strongest op (``none`` included, as the argmax)."""
        if "skip_connect" not in net.operations:
            return genotype
        skip = list(net.operations).index("skip_connect")
        weights = net.edge_weights().detach().clone()  # (6, O)
        while genotype.ops.count("skip_connect") > cap:
            rows = [k for k, op in enumerate(genotype.ops) if op == "skip_connect"]  # ops are in alpha's row order
            weights[min(rows, key=lambda r: float(weights[r, skip])), skip] = 0.0
            genotype = NB201Genotype.from_alpha(weights, tuple(net.operations))
        return genotype

    def plot(self, genotype: NB201Genotype, path: str | Path, title: str | None = None) -> None:
        from .viz import plot_nb201_cell

        plot_nb201_cell(genotype, path, title)

    def plot_alpha(self, weights: Mapping[str, torch.Tensor], operations: Sequence[str], path: str | Path, title: str | None = None) -> None:
        """The (6, O) heatmap, each edge's argmax outlined (``viz.plot_nb201_alpha``)."""
        from .viz import plot_nb201_alpha

        plot_nb201_alpha(weights["cell"], path, tuple(operations), title)


def _edge_key(source: int, target: int) -> str:
    return f"cell/{target}<-{source}"  # the benchmark's own edge names ("1<-0", ...)
