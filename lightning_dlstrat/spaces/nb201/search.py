"""The NAS-Bench-201 search supernet, per-edge reference form.

The DARTS relaxation (Liu et al., ICLR 2019) of the NAS-Bench-201 cell (Dong & Yang, ICLR 2020,
Sec. 4 "weight-sharing" baselines; the code of record is D-X-Y/AutoDL-Projects
``xautodl/models/cell_searchs/search_model_darts.py`` and ``search_cells.py``
``NAS201SearchCell``): the benchmark's skeleton with every cell replaced by a search cell whose 6
edges are *mixed* operations, each the softmax(alpha)-weighted sum of all candidate operations.
One alpha of shape (6, O) is shared by all 15 cells; its rows follow :data:`EDGES`
((0->1), (0->2), (1->2), (0->3), (1->3), (2->3)), its columns the operations
(``none``, ``skip_connect``, ``nor_conv_1x1``, ``nor_conv_3x3``, ``avg_pool_3x3``).

Conventions, as the benchmark's search code (``exps/NATS-algos/search-cell.py`` defaults):
- the cells' BatchNorms have ``affine=False`` and ``track_running_stats=False`` (so they always
  normalise with the batch's statistics, in eval mode too), and their convolutions get a bias
  (``bias = not affine``); both are arguments. The stem, the two residual blocks and the final
  BatchNorm keep affine BatchNorm with running statistics;
- alpha starts at 1e-3 * randn;
- :meth:`NB201SearchNetwork.genotype` takes the argmax of every row, ``none`` included.

This is the one-mixed-op-per-edge form, written for clarity and as the yardstick for
:mod:`.search_fast` (same function, batched). It is a plain ``nn.Module``; the bilevel
optimisation belongs to the trainer.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..supernet import Supernet
from .genotype import EDGES, NB201_OPS, NUM_NODES, NB201Genotype, edge_row
from .network import check_input_size
from .ops import ResNetBasicBlock, make_op, stages

__all__ = ["MixedOp", "NB201SearchCell", "NB201SearchNetwork"]


class MixedOp(nn.Module):
    """One edge: sum_o w_o * op_o(x) for the softmax weights w of its alpha row. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, operations: Sequence[str], affine: bool, track_running_stats: bool):
        super().__init__()
        self.ops = nn.ModuleList(make_op(name, channels, affine, track_running_stats) for name in operations)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # weights: (O,)
        return sum(w * op(x) for w, op in zip(weights, self.ops))  # (B, C, H, W)


class NB201SearchCell(nn.Module):
    """Node t = sum over s < t of MixedOp(s -> t)(node s); the output is node 3."""

    def __init__(self, channels: int, operations: Sequence[str], affine: bool, track_running_stats: bool):
        super().__init__()
        self.edges = nn.ModuleList(MixedOp(channels, operations, affine, track_running_stats) for _ in EDGES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W); weights: (6, O) softmax(alpha)
        nodes = [x]
        for t in range(1, NUM_NODES):
            nodes.append(sum(self.edges[edge_row(s, t)](nodes[s], weights[edge_row(s, t)]) for s in range(t)))  # (B, C, H, W)
        return nodes[-1]


class NB201SearchNetwork(Supernet):
    """The NAS-Bench-201 DARTS supernet (reference form).

    Example::

        net = NB201SearchNetwork(C=16, N=5, num_classes=10)
        logits = net(torch.randn(2, 3, 32, 32))  # (2, 10)
        net.genotype()                           # NB201Genotype('|...~0|+|...|')
    """

    cell_class: type[nn.Module] = NB201SearchCell  # the fast supernet swaps in its batched cell

    def __init__(
        self,
        C: int = 16,  # channels of the first stage (16 in the benchmark)
        N: int = 5,  # cells per stage (5 in the benchmark)
        num_classes: int = 10,
        in_chans: int = 3,
        operations: Sequence[str] | None = None,  # candidate ops; None: the 5 of NAS-Bench-201
        affine: bool = False,  # BatchNorm affine in the cells (the benchmark's search default: False)
        track_running_stats: bool = False,  # BatchNorm running statistics in the cells (default: False)
    ):
        super().__init__()
        operations = tuple(NB201_OPS if operations is None else operations)
        unknown = [o for o in operations if o not in NB201_OPS]
        if unknown or not operations or len(set(operations)) != len(operations):
            raise ValueError(f"operations must be distinct NAS-Bench-201 operations ({', '.join(NB201_OPS)}), got {list(operations)}")
        if C < 1 or N < 0 or in_chans < 1 or num_classes < 1:
            raise ValueError(f"need C >= 1, N >= 0, in_chans >= 1, num_classes >= 1; got C={C}, N={N}, in_chans={in_chans}, num_classes={num_classes}")
        self.C, self.N, self.num_classes, self.in_chans = C, N, num_classes, in_chans
        self.operations, self.affine, self.track_running_stats = operations, affine, track_running_stats

        self.stem = nn.Sequential(nn.Conv2d(in_chans, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells, c_prev = stages(C, N, lambda c: self.cell_class(c, operations, affine, track_running_stats))
        self.num_features = c_prev
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        # registered, so DDP broadcasts it and all-reduces its gradient and checkpoints hold it;
        # 1e-3 * randn as the benchmark's code (the noise breaks ties between identical edges)
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(operations)))  # (6, O)

    # --- parameters ------------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """[alpha]: what the architecture optimiser updates."""
        return [self.alpha]

    # --- architecture weights --------------------------------------------------------------------
    def _mixing_weights(self, device_type: str, sample: bool = False) -> torch.Tensor:
        """softmax(alpha) over the operations (or the relaxation's weights), (6, O), in float32 (float64 in tests) under any autocast."""
        # (a network on the meta device, whose memory config.check_size measures, has no autocast of its own)
        with torch.autocast(device_type="cpu" if device_type == "meta" else device_type, enabled=False):
            dtype = torch.promote_types(self.alpha.dtype, torch.float32)
            if self.relaxation is not None:
                return self.relaxation(self.alpha.to(dtype), sample, cell=0)  # (6, O)
            return F.softmax(self.alpha.to(dtype), dim=-1)  # (6, O)

    def edge_weights(self) -> torch.Tensor:
        """softmax(alpha), (6, O), detached: row k is edge ``EDGES[k]``, column o is ``operations[o]``."""
        with torch.no_grad():
            return self._mixing_weights(self.alpha.device.type)

    def genotype(self, include_none: bool = True) -> NB201Genotype:
        """The op of largest weight on each edge, ``none`` included (the benchmark's DARTS rule)."""
        return NB201Genotype.from_alpha(self.alpha, self.operations, include_none=include_none)

    # --- forward ---------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.in_chans)
        # every forward, training or evaluation, mixes as the method does (the official codes sample
        # GDAS's and DrNAS's weights and add DARTS-'s skip in evaluation too); reading the genotype does not
        weights = self._mixing_weights(x.device.type, sample=True)  # (6, O)
        x = self.stem(x)  # (B, C, H, W)
        for cell in self.cells:
            x = cell(x) if isinstance(cell, ResNetBasicBlock) else cell(x, weights)  # (B, C_stage, H', W')
        return self.lastact(x)  # (B, num_features, H/4, W/4)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pooling(x).flatten(1)  # (B, num_features)
        return x if pre_logits else self.classifier(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, num_classes)
