"""Drop-path (stochastic depth per sample; Huang et al. 2016, as DARTS's evaluation network uses it).

Defined here rather than taken from timm so that building a network does not import timm (whose
import takes seconds and, in this package, registers the timm entry points; see
``lightning_dlstrat/_timm_hook.py``). Same arithmetic and random draws as ``timm.layers.drop_path``.
"""

from __future__ import annotations

import torch


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero whole samples of ``x`` (B, ...) with probability ``drop_prob``, scaling the kept ones by 1 / (1 - p)."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)  # (B, 1, ...)
    if keep_prob > 0.0:
        mask.div_(keep_prob)
    return x * mask
