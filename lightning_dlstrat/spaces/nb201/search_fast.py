"""A faster NAS-Bench-201 supernet: every operation batched over the edges that leave one node.

Same function as the per-edge reference (:mod:`.search`; DARTS relaxation, Liu et al. ICLR 2019,
of the NAS-Bench-201 cell, Dong & Yang ICLR 2020), with far fewer kernel launches. The reference
runs 6 edges x 5 operations per cell one by one. Here a cell walks its nodes 0, 1, 2 in order;
once node s is known, all its outgoing edges (to nodes s+1 .. 3: 3, 2 and 1 edges) are computed
together:

- ``nor_conv_kxk``: the edges all convolve the same input with different filters, so the ``n``
  filters are stacked into ONE convolution with ``n * C`` output channels (ReLU applied once).
  BatchNorm is per channel (with or without affine parameters and running statistics), so one
  BatchNorm over ``n * C`` channels is exactly ``n`` per-edge BatchNorms;
- ``avg_pool_3x3`` and ``skip_connect`` have no weights and see the same input on every
  outgoing edge: computed once and broadcast;
- ``none`` contributes exactly zero to the output and to every gradient (its softmax weight
  still counts in alpha's normalisation), so it is not computed.

Weights are laid out per (source node, operation) instead of per edge; :func:`edge_tensor_pairs`
maps each per-edge tensor of the reference onto its slice here, which is how weights convert
(:meth:`FastNB201SearchNetwork.load_reference` / ``store_reference``) and how the tests compare
outputs and the gradients of weights and alpha in float64.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..supernet import FastSupernet
from .genotype import NUM_NODES, edge_row
from .ops import AvgPool3x3
from .search import NB201SearchNetwork

__all__ = ["BatchedReLUConvBN", "FastNB201SearchCell", "FastNB201SearchNetwork", "SourceEdges", "edge_tensor_pairs"]

_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


class BatchedReLUConvBN(nn.Module):
    """``nor_conv_kxk`` for ``n`` edges from one source. (B, C, H, W) after ReLU -> (B, n*C, H, W).

    Output channels ``e*C .. (e+1)*C`` belong to edge ``e``.
    """

    def __init__(self, channels: int, edges: int, kernel_size: int, affine: bool, track_running_stats: bool):
        super().__init__()
        self.n, self.c, self.k = edges, channels, kernel_size
        # one nn.Conv2d-shaped layer per edge, stacked; initialised per edge slice below so every
        # slice gets exactly the distribution (fan-in C*k*k) the reference's own conv gets
        self.conv = nn.Conv2d(channels, edges * channels, kernel_size, padding=kernel_size // 2, bias=not affine)
        for e in range(edges):
            ref = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=not affine)
            with torch.no_grad():
                self.conv.weight[e * channels : (e + 1) * channels].copy_(ref.weight)
                if self.conv.bias is not None:
                    self.conv.bias[e * channels : (e + 1) * channels].copy_(ref.bias)
        self.bn = nn.BatchNorm2d(edges * channels, affine=affine, track_running_stats=track_running_stats)

    def forward(self, relu_x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(relu_x))  # (B, n*C, H, W)

    def edge_tensors(self, e: int, ref: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(slice of this layer's tensor, the reference ReLUConvBN's tensor it equals) for edge ``e``."""
        sl = slice(e * self.c, (e + 1) * self.c)
        conv, bn = ref.op[1], ref.op[2]
        yield self.conv.weight[sl], conv.weight
        if self.conv.bias is not None:
            yield self.conv.bias[sl], conv.bias
        if self.bn.affine:
            yield self.bn.weight[sl], bn.weight
            yield self.bn.bias[sl], bn.bias
        if self.bn.track_running_stats:
            yield self.bn.running_mean[sl], bn.running_mean
            yield self.bn.running_var[sl], bn.running_var


class SourceEdges(nn.Module):
    """Every operation on the edges leaving one node. (B, C, H, W) -> {op: (B, n or 1, C, H, W)}."""

    def __init__(self, channels: int, source: int, operations: Sequence[str], affine: bool, track_running_stats: bool):
        super().__init__()
        self.targets = list(range(source + 1, NUM_NODES))
        self.n, self.c = len(self.targets), channels
        # which alpha rows these edges use; a buffer, so indexing never copies from the host
        self.register_buffer("rows", torch.tensor([edge_row(source, t) for t in self.targets], dtype=torch.long), persistent=False)
        self.convs = nn.ModuleDict(
            {name: BatchedReLUConvBN(channels, self.n, _KERNEL[name], affine, track_running_stats) for name in operations if name in _KERNEL}
        )
        self.pool = AvgPool3x3() if "avg_pool_3x3" in operations else None
        self.has_skip = "skip_connect" in operations

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        out: dict[str, torch.Tensor] = {}
        if self.convs:
            relu_x = F.relu(x)  # once for all conv edges
            for name, conv in self.convs.items():
                out[name] = conv(relu_x).view(b, self.n, self.c, h, w)  # (B, n, C, H, W)
        if self.pool is not None:
            out["avg_pool_3x3"] = self.pool(x).unsqueeze(1)  # (B, 1, C, H, W): shared by all edges
        if self.has_skip:
            out["skip_connect"] = x.unsqueeze(1)  # (B, 1, C, H, W): identity, shared
        return out


class FastNB201SearchCell(nn.Module):
    """A search cell with the reference's signature and function, batched per source node."""

    def __init__(self, channels: int, operations: Sequence[str], affine: bool, track_running_stats: bool):
        super().__init__()
        self.op_index = {name: i for i, name in enumerate(operations)}
        # node 3 is the output and feeds nothing
        self.sources = nn.ModuleList(SourceEdges(channels, s, operations, affine, track_running_stats) for s in range(NUM_NODES - 1))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W); weights: (6, O) softmax(alpha)
        nodes = [x]
        partial: list[torch.Tensor | None] = [None] * NUM_NODES  # alpha-weighted sums per target node
        for s, source in enumerate(self.sources):
            w = weights.index_select(0, source.rows)  # (n, O): this node's outgoing edges
            total = None
            for name, y in source(nodes[s]).items():
                term = w[:, self.op_index[name]].view(1, -1, 1, 1, 1) * y  # (B, n, C, H, W); shared ops broadcast
                total = term if total is None else total + term
            for e, t in enumerate(source.targets):
                if total is None:  # only `none` on these edges: they add zero
                    part = torch.zeros_like(nodes[s])
                else:
                    part = total[:, e] if total.shape[1] > 1 else total[:, 0]  # (B, C, H, W)
                partial[t] = part if partial[t] is None else partial[t] + part
            nodes.append(partial[s + 1])  # node s+1 reads nodes 0..s, all done now
        return nodes[-1]  # (B, C, H, W)


class FastNB201SearchNetwork(NB201SearchNetwork, FastSupernet):
    """:class:`NB201SearchNetwork` with :class:`FastNB201SearchCell` cells; same alpha, same genotype rule."""

    cell_class = FastNB201SearchCell

    def edge_tensor_pairs(self, ref: NB201SearchNetwork) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return edge_tensor_pairs(self, ref)


def edge_tensor_pairs(fast: FastNB201SearchNetwork, ref: NB201SearchNetwork) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(slice of a fast tensor, the reference tensor it equals) for every per-edge weight and statistic."""
    if fast.operations != ref.operations or len(fast.cells) != len(ref.cells):
        raise ValueError("the two supernets have different configurations")
    for fast_cell, ref_cell in zip(fast.cells, ref.cells):
        if not isinstance(fast_cell, FastNB201SearchCell):
            continue  # residual blocks: same module names, handled by the state dict
        for s, source in enumerate(fast_cell.sources):
            for e, t in enumerate(source.targets):
                ref_edge = ref_cell.edges[edge_row(s, t)]
                for name, conv in source.convs.items():
                    yield from conv.edge_tensors(e, ref_edge.ops[fast_cell.op_index[name]])
