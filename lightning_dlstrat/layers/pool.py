"""Global pooling by name, with timm's names: ``"avg"``, ``"max"``, ``"avgmax"`` (their mean).

The networks' ``global_pool=`` argument and ``reset_classifier(num_classes, global_pool)`` take
these names, as timm's models do (``timm.layers.SelectAdaptivePool2d``). A small copy rather than
timm's own, so that building a network does not import timm (seconds at every CLI start).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOLS = ("avg", "max", "avgmax")


class GlobalPool(nn.Module):
    """(B, C, H, W) -> (B, C) by average, maximum or their mean."""

    def __init__(self, pool_type: str = "avg"):
        super().__init__()
        if pool_type not in POOLS:
            raise ValueError(f"unknown global_pool {pool_type!r}; choose one of: {', '.join(POOLS)}")
        self.pool_type = pool_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, C)
        if self.pool_type == "max":
            return F.adaptive_max_pool2d(x, 1).flatten(1)
        return 0.5 * (F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)).flatten(1)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"
