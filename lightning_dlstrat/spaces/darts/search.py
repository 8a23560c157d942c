"""The DARTS search space: a supernet of cells whose edges mix every candidate operation.

References:
1) Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, Sec. 2.1-2.2;
   the code this follows is quark0/darts ``cnn/model_search.py``.
2) Xu et al., "PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture Search",
   ICLR 2020 (yuhuixu1993/PC-DARTS ``model_search.py``): partial channels and edge normalisation.

A cell has two inputs (the outputs of the two previous cells) and ``steps`` intermediate nodes;
node i sums one *mixed edge* from every earlier state (2 + i edges), and the cell's output
concatenates the last ``multiplier`` nodes. A mixed edge computes every operation and weights
them by the softmax of its row of the architecture parameters alpha (``alphas_normal`` or
``alphas_reduce``, shape (E, O): edges x operations, shared by all cells of a kind). A third and
two thirds of the way through the network a *reduction* cell halves the resolution and doubles
the channels. BatchNorm has no affine parameters here so that learned scales cannot rescale, and
so hide, the relative weights of the operations (paper, App. A.1.1).

This is the per-edge implementation, written to match the reference line by line; it is what
faster variants are checked against. Training (the bilevel optimisation) lives in
:mod:`lightning_dlstrat.trainers.darts_search`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..supernet import Supernet
from .ops import OPS, PRIMITIVES, cell_inputs, reduction_layers
from .genotype import Genotype, derive_genotype, num_edges

__all__ = ["MixedOp", "SearchCell", "SearchNetwork", "cell_inputs", "channel_shuffle", "edge_normalisation"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups, so the next edge samples other channels (PC-DARTS)."""
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2)  # (B, C/groups, groups, H, W)
    return x.reshape(b, c, h, w)


def edge_normalisation(betas: torch.Tensor, steps: int) -> torch.Tensor:
    """PC-DARTS edge weights: a softmax over the incoming edges of each node. (E,) -> (E,)."""
    weights, start = [], 0
    for i in range(steps):
        weights.append(F.softmax(betas[start : start + 2 + i], dim=-1))  # (2 + i,)
        start += 2 + i
    return torch.cat(weights)


class MixedOp(nn.Module):
    """One edge of the supernet: the alpha-weighted sum of every candidate operation.

    With ``partial_channels`` k > 1 (PC-DARTS) only the first C/k channels go through the
    operations; the rest bypass the edge (max-pooled on a stride-2 edge) and a channel shuffle
    mixes the two parts, cutting memory and compute by about k.
    """

    def __init__(self, channels: int, stride: int, primitives: Sequence[str], partial_channels: int = 1):
        super().__init__()
        self.k = partial_channels
        c = channels // partial_channels
        self.ops = nn.ModuleList()
        for name in primitives:
            op = OPS[name](c, stride, False)
            if "pool" in name:
                # pooling has no BatchNorm of its own; the reference appends one so that all
                # operations' outputs are on a comparable scale before the weighted sum
                op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
            self.ops.append(op)
        # ceil_mode matches the strided operations' output size on odd inputs (7 -> 4)
        self.bypass_pool = nn.MaxPool2d(2, 2, ceil_mode=True) if partial_channels > 1 and stride == 2 else None

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W); weights: (O,) softmax of this edge's alpha
        if self.k == 1:
            return sum(w * op(x) for w, op in zip(weights, self.ops))  # (B, C, H/s, W/s)
        c = x.shape[1] // self.k
        active, bypass = x[:, :c], x[:, c:]  # (B, C/k, H, W), (B, C - C/k, H, W)
        mixed = sum(w * op(active) for w, op in zip(weights, self.ops))  # (B, C/k, H/s, W/s)
        if self.bypass_pool is not None:
            bypass = self.bypass_pool(bypass)
        return channel_shuffle(torch.cat([mixed, bypass], dim=1), self.k)  # (B, C, H/s, W/s)


class SearchCell(nn.Module):
    def __init__(
        self,
        steps: int,
        multiplier: int,
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        primitives: Sequence[str],
        partial_channels: int = 1,
    ):
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        self.preprocess0, self.preprocess1 = cell_inputs(c_prev_prev, c_prev, channels, reduction_prev)
        # edges in the reference order: node 0 from states 0, 1; node 1 from states 0, 1, 2; ...
        # in a reduction cell only the edges from the cell inputs stride
        self.edges = nn.ModuleList(
            MixedOp(channels, 2 if reduction and j < 2 else 1, primitives, partial_channels)
            for i in range(steps)
            for j in range(2 + i)
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor | None = None) -> torch.Tensor:
        # s0, s1: outputs of the cells two back and one back; weights: (E, O); edge_weights: (E,) or None
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # 2 x (B, C, H, W)
        offset = 0
        for _ in range(self.steps):
            if edge_weights is None:
                s = sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            else:
                s = sum(edge_weights[offset + j] * self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)  # (B, C, H/s, W/s)
        return torch.cat(states[-self.multiplier :], dim=1)  # (B, multiplier * C, H/s, W/s)


class SearchNetwork(Supernet):
    """The DARTS supernet: stem, ``layers`` search cells, global pooling and a linear classifier.

    Example (the paper's CIFAR-10 search network, 1.9 M weights)::

        net = SearchNetwork(C=16, layers=8, in_shape=(3, 32, 32))
        logits = net(torch.randn(2, 3, 32, 32))  # (2, 10)
        net.genotype()  # the discrete cells the current alpha gives
    """

    cell_class: type[nn.Module] = SearchCell  # FastSearchNetwork swaps in its batched cell

    def __init__(
        self,
        C: int = 16,  # channels of the first cells (16 in the paper's search)
        num_classes: int = 10,
        layers: int = 8,  # cells; reductions at layers // 3 and 2 * layers // 3
        steps: int = 4,  # intermediate nodes per cell
        multiplier: int = 4,  # how many of the last nodes a cell concatenates as its output
        stem_multiplier: int = 3,  # the stem outputs stem_multiplier * C channels
        primitives: Sequence[str] | None = None,  # candidate operations; None: the 8 of DARTS
        in_shape: Sequence[int] = (3, 32, 32),  # (channels, height, width) of the input
        partial_channels: int = 1,  # PC-DARTS k: 1 is plain DARTS, the PC-DARTS paper uses 4
    ):
        super().__init__()
        primitives = tuple(PRIMITIVES if primitives is None else primitives)
        _check_config(C, layers, steps, multiplier, primitives, in_shape, partial_channels)
        self.C, self.num_classes, self.layers = C, num_classes, layers
        self.steps, self.multiplier = steps, multiplier
        self.primitives, self.in_shape = primitives, tuple(in_shape)
        self.partial_channels = partial_channels

        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_shape[0], c_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_curr),  # the reference keeps the stem's BatchNorm affine
        )
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in reduction_layers(layers)
            if reduction:
                c_curr *= 2
            self.cells.append(self.cell_class(steps, multiplier, c_prev_prev, c_prev, c_curr, reduction, reduction_prev, primitives, partial_channels))
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, multiplier * c_curr
        self.num_features = c_prev
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

        # Architecture parameters: registered, so DDP broadcasts them at start and all-reduces
        # their gradients, and checkpoints hold them. 1e-3 * randn as in the reference code (the
        # paper says zeros; the noise breaks ties between otherwise identical edges).
        edges, ops = num_edges(steps), len(primitives)
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(edges, ops))  # (E, O)
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(edges, ops))  # (E, O)
        if partial_channels > 1:
            self.betas_normal = nn.Parameter(1e-3 * torch.randn(edges))  # (E,)
            self.betas_reduce = nn.Parameter(1e-3 * torch.randn(edges))  # (E,)
        else:
            self.betas_normal = self.betas_reduce = None

    @property
    def operations(self) -> tuple[str, ...]:
        """The candidate operations, alpha's columns (the name every search space's supernet uses)."""
        return self.primitives

    # --- parameters ------------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """alpha (and the PC-DARTS betas): what the architecture optimiser updates."""
        params = [self.alphas_normal, self.alphas_reduce]
        if self.betas_normal is not None:
            params += [self.betas_normal, self.betas_reduce]
        return params

    # --- architecture weights ------------------------------------------------------------------
    def _mixing_weights(self, device_type: str, sample: bool = False) -> dict[bool, tuple[torch.Tensor, torch.Tensor | None]]:
        """{reduction: (op weights (E, O), edge weights (E,) or None)}, in float32 under any autocast.

        ``sample``: a training forward (a relaxation's random sample, noise, auxiliary skip).
        """
        # (a network on the meta device, whose memory config.check_size measures, has no autocast of its own)
        with torch.autocast(device_type="cpu" if device_type == "meta" else device_type, enabled=False):
            out = {}
            for reduction, alpha, beta in ((False, self.alphas_normal, self.betas_normal), (True, self.alphas_reduce, self.betas_reduce)):
                dtype = torch.promote_types(alpha.dtype, torch.float32)  # float32, or float64 in tests
                if self.relaxation is None:
                    ops = F.softmax(alpha.to(dtype), dim=-1)  # (E, O)
                else:
                    ops = self.relaxation(alpha.to(dtype), sample, cell=int(reduction))  # (E, O); each cell type draws its own sample
                edges = None if beta is None else edge_normalisation(beta.to(dtype), self.steps)  # (E,)
                out[reduction] = (ops, edges)
            return out

    def edge_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-edge operation weights (normal, reduce), each (E, O) float32, detached.

        The softmax of alpha; with PC-DARTS each edge's row is multiplied by its edge
        normalisation weight, as the PC-DARTS genotype parser does.
        """
        with torch.no_grad():
            mixing = self._mixing_weights(self.alphas_normal.device.type)
            return tuple(ops if edges is None else ops * edges[:, None] for ops, edges in (mixing[False], mixing[True]))

    def genotype(self) -> Genotype:
        """The discrete cells: per node the 2 strongest edges, each with its strongest non-``none`` op."""
        normal, reduce = self.edge_weights()
        return derive_genotype(normal, reduce, self.primitives, self.steps, self.multiplier)

    # --- forward -------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # every forward, training or evaluation, mixes as the method does (the official codes sample
        # GDAS's and DrNAS's weights and add DARTS-'s skip in evaluation too); reading the genotype does not
        mixing = self._mixing_weights(x.device.type, sample=True)
        s0 = s1 = self.stem(x)  # (B, stem_multiplier * C, H, W)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, *mixing[cell.reduction])  # s1: (B, multiplier * C_cell, H', W')
        return s1

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)  # (B, num_features)
        return x if pre_logits else self.classifier(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_config(C: int, layers: int, steps: int, multiplier: int, primitives: tuple[str, ...], in_shape: Sequence[int], k: int) -> None:
    """Reject configurations the supernet cannot build or run, with what to change."""
    if C < 1 or layers < 1 or steps < 1:
        raise ValueError(f"C, layers and steps must be positive, got C={C}, layers={layers}, steps={steps}")
    if not 1 <= multiplier <= steps:
        raise ValueError(f"multiplier must be between 1 and steps ({steps}), not {multiplier}")
    unknown = [p for p in primitives if p not in OPS]
    if unknown:
        raise ValueError(f"unknown operation(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(OPS)}")
    if len(set(primitives)) != len(primitives) or not [p for p in primitives if p != "none"]:
        raise ValueError(f"primitives must be distinct and include an operation other than 'none', got {list(primitives)}")
    if len(in_shape) != 3:
        raise ValueError(f"in_shape must be (channels, height, width), got {tuple(in_shape)}: the DARTS supernet takes images")
    if k < 1:
        raise ValueError(f"partial_channels must be >= 1 (1 turns PC-DARTS off), not {k}")
    reductions = reduction_layers(layers)
    n_red = len(reductions)
    channels = [C * 2 ** sum(r <= i for r in reductions) for i in range(layers)]  # per cell
    if any(c % k for c in channels):
        raise ValueError(f"partial_channels={k} must divide the cell channels {sorted(set(channels))}; pick C divisible by {k}")
    if "skip_connect" in primitives and any((channels[i] // k) % 2 for i in reductions):
        raise ValueError(f"a stride-2 skip_connect needs an even channel count per edge; pick C so that 2*C/{k} is even")
    h, w = in_shape[1], in_shape[2]
    if min(h, w) < 2**n_red:
        raise ValueError(
            f"a {h}x{w} input is too small for {layers} cells: {n_red} reduction cell(s) each halve the "
            f"resolution, which needs at least {2**n_red}x{2**n_red} pixels; use larger images or fewer layers"
        )
