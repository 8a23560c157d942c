"""The NAS-Bench-201 operations and the residual reduction block of its macro skeleton.

As the benchmark defines them (Dong & Yang, "NAS-Bench-201", ICLR 2020, Sec. 2.1; the code of
record is D-X-Y/AutoDL-Projects ``xautodl/models/cell_operations.py``), so that parameter counts
and state-dict keys match the benchmark's networks:

- ``none``: the input times zero; ``skip_connect``: identity (cells never change shape);
- ``nor_conv_1x1`` / ``nor_conv_3x3``: ReLU -> Conv k x k (stride 1, same padding) -> BatchNorm.
  The convolution has a bias exactly when BatchNorm has no affine parameters (``bias = not
  affine``): the evaluation network (affine BN) has none, the search supernet (BN without affine)
  gets one;
- ``avg_pool_3x3``: 3x3 average pool, stride 1, padding 1, padding not counted; no BatchNorm;
- the reduction block between stages is a ResNet basic block (He et al. 2016) with stride 2:
  ReLU-Conv3x3(stride 2)-BN -> ReLU-Conv3x3-BN, plus a shortcut AvgPool(2, 2) -> Conv1x1.
"""

from __future__ import annotations

import torch
from torch import nn

from .genotype import NB201_OPS

__all__ = ["AvgPool3x3", "Identity", "ReLUConvBN", "ResNetBasicBlock", "Zero", "make_op"]


class ReLUConvBN(nn.Module):
    """ReLU -> Conv -> BN; module names ``op.1`` (conv) and ``op.2`` (BN) as in the benchmark."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),  # not in place: the input also feeds the other edges of its node
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=not affine),
            nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)  # (B, c_out, H / stride, W / stride)


class Zero(nn.Module):
    """``none``: zeros of the input's shape (computed as x * 0, as the benchmark does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)  # (B, C, H, W)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class AvgPool3x3(nn.AvgPool2d):
    """``avg_pool_3x3``: the mean of each pixel's 3x3 neighbourhood inside the image."""

    def __init__(self):
        super().__init__(3, stride=1, padding=1, count_include_pad=False)


def make_op(name: str, channels: int, affine: bool, track_running_stats: bool) -> nn.Module:
    """One cell operation on ``channels`` channels (stride 1: NB201 cells never change shape)."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, affine, track_running_stats)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, affine, track_running_stats)
    if name == "avg_pool_3x3":
        return AvgPool3x3()
    raise ValueError(f"unknown NAS-Bench-201 operation {name!r}; the operations are {', '.join(NB201_OPS)}")


class ResNetBasicBlock(nn.Module):
    """The stride-2 residual block joining two stages: (B, c_in, H, W) -> (B, c_out, ceil(H/2), ceil(W/2)).

    Its BatchNorms are always affine and track running statistics, in the search supernet too
    (the benchmark's search code builds it with the defaults).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        if stride != 2:
            raise ValueError("the NAS-Bench-201 skeleton only uses stride-2 residual blocks")
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        # ceil_mode: identical on even sizes (the benchmark's 32x32 and 16x16 inputs) and keeps odd
        # sizes aligned with the strided convolution (7 -> 4 on both paths instead of 4 vs 3)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=True),
            nn.Conv2d(c_in, c_out, kernel_size=1, bias=False),  # no BN, no ReLU on the shortcut
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))  # (B, c_out, H/2, W/2)


def stages(C: int, N: int, make_cell) -> tuple[nn.ModuleList, int]:
    """The benchmark's skeleton between stem and head: 3 stages of ``N`` cells (C, 2C, 4C channels)
    joined by stride-2 residual blocks; ``make_cell(channels)`` builds one cell. Returns the
    modules in order and the output channel count (4C)."""
    cells, c_prev = nn.ModuleList(), C
    for stage, c in enumerate((C, 2 * C, 4 * C)):
        if stage > 0:
            cells.append(ResNetBasicBlock(c_prev, c, 2))
        cells.extend(make_cell(c) for _ in range(N))
        c_prev = c
    return cells, c_prev
