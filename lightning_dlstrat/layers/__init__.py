"""Reusable blocks shared by every network of the package: drop-path, timm-named global pooling and
timm's feature indices. A search space's own operations live with the space (``spaces/<name>/ops.py``)."""

from .drop import drop_path
from .pool import POOLS, GlobalPool

__all__ = ["POOLS", "GlobalPool", "drop_path"]
