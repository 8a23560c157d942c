"""Reusable blocks shared by the networks in :mod:`lightning_dlstrat.models`."""

from .darts_ops import OPS, PRIMITIVES, DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero

__all__ = ["OPS", "PRIMITIVES", "DilConv", "FactorizedReduce", "Identity", "ReLUConvBN", "SepConv", "Zero"]
