"""Reusable blocks shared by the networks in :mod:`lightning_dlstrat.models`."""

from .darts_ops import OPS, PRIMITIVES, DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero, cell_inputs, reduction_layers
from .drop import drop_path
from .pool import POOLS, GlobalPool

__all__ = ["OPS", "POOLS", "PRIMITIVES", "DilConv", "FactorizedReduce", "GlobalPool", "Identity", "ReLUConvBN", "SepConv", "Zero", "cell_inputs", "drop_path", "reduction_layers"]
