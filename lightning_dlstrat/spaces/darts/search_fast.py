"""A faster DARTS supernet: every candidate operation batched over all edges that leave a state.

Same function as the per-edge reference (:mod:`lightning_dlstrat.spaces.darts.search`, DARTS,
Liu et al. ICLR 2019), computed with far fewer, larger kernels. The reference runs 14 edges x 8
operations per cell one by one (thousands of tiny kernel launches per step). Here a cell walks its
states in order; when a state is known, all its outgoing edges (to every later node) are
computed at once:

- convolutions (``sep_conv_*``, ``dil_conv_*``): the state is ReLU'd once and replicated for the
  ``n`` outgoing edges, then each layer runs as ONE grouped convolution over the ``n * C``
  channels (depthwise: ``groups = n * C``; pointwise: ``groups = n``). BatchNorm without affine
  parameters is per channel, so one BatchNorm over ``n * C`` channels is exactly ``n`` per-edge
  BatchNorms;
- ``max_pool``, ``avg_pool`` and stride-1 ``skip_connect`` have no weights and see the same input
  on every outgoing edge: they run once per state, and their (identical) BatchNorm statistics are
  kept once;
- a stride-2 ``skip_connect`` (factorized reduction) is two 1x1 stride-2 convolutions whose
  output channels are stacked over the edges;
- ``none`` contributes exactly zero (to the output and to every gradient; alpha's softmax still
  counts it), so it is not computed at all;
- the mixing weight of an operation with a last BatchNorm of its own enters as that
  BatchNorm's affine scale (one kernel instead of BatchNorm, multiply and their backwards);
- dilated convolutions run undilated on the polyphase sub-images of the state, split once per
  state for all of them, and depthwise kernels are cropped to the taps that can reach the map
  (the late cells of small inputs have 2x2 and 1x1 maps).

Why each of these pays, with measurements, is in ``docs/benchmarks.md`` ("DARTS search step").
The alpha-weighted sums are accumulated per node as states become available. Parameters are
laid out per (state, operation) instead of per edge; :func:`edge_tensor_pairs` maps every
per-edge tensor of the reference onto its slice here, which is how weights are converted
(:meth:`FastSearchNetwork.load_reference` / :meth:`FastSearchNetwork.store_reference`) and how the
tests check that outputs and the gradients of weights and alpha agree.
"""

from __future__ import annotations

import re
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..supernet import FastSupernet
from .search import SearchNetwork, cell_inputs, channel_shuffle

__all__ = ["FastSearchCell", "FastSearchNetwork", "edge_tensor_pairs"]

_CONV = re.compile(r"(sep|dil)_conv_(\d+)x\2$")


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, affine=False)


class BatchedConvOp(nn.Module):
    """``sep_conv_kxk`` or ``dil_conv_kxk`` for ``n`` edges at once. -> (B, n*C, H/s, W/s), weighted.

    The input is the source state after ReLU, replicated once per edge (edge-major: channels
    ``e*C .. (e+1)*C`` belong to edge ``e``); for a stride-1 dilated convolution, its polyphase
    form (:func:`depthwise_conv`). The last BatchNorm multiplies edge e's channels by its mixing
    weight (:func:`_weighted_bn`).

    Each kernel size keeps its own convolution: one convolution for all sizes, with the smaller
    kernels zero-padded to the largest, was slower on CPU (docs/benchmarks.md).
    """

    def __init__(self, kind: str, kernel: int, channels: int, edges: int, stride: int):
        super().__init__()
        self.kind, self.n, self.c, self.stride = kind, edges, channels, stride
        self.dilation = 2 if kind == "dil" else 1
        nc = edges * channels
        self.dw1 = nn.Parameter(torch.empty(nc, 1, kernel, kernel))  # depthwise, one filter per channel
        self.pw1 = nn.Parameter(torch.empty(nc, channels, 1, 1))  # pointwise, grouped by edge
        self.bn1 = _bn(nc)
        if kind == "sep":  # separable convolutions are applied twice (reference operations.py)
            self.dw2 = nn.Parameter(torch.empty(nc, 1, kernel, kernel))
            self.pw2 = nn.Parameter(torch.empty(nc, channels, 1, 1))
            self.bn2 = _bn(nc)
        for p in self.parameters():
            # the same initialisation nn.Conv2d gives each per-edge layer (fan-in of one edge)
            nn.init.kaiming_uniform_(p, a=5**0.5)

    def forward(self, replicated: torch.Tensor, weights: torch.Tensor, phases: torch.Tensor | None = None) -> torch.Tensor:
        # replicated: (B, n*C, H, W); phases: its polyphase form (B, 4*n*C, H/2, W/2) or None; weights: (n*C,)
        if phases is not None:
            x = polyphase_conv(phases, self.dw1)  # (B, n*C, H, W)
        else:
            x = depthwise_conv(replicated, self.dw1, self.stride, self.dilation)  # (B, n*C, H/s, W/s)
        x = F.conv2d(x, self.pw1, groups=self.n)  # (B, n*C, H/s, W/s): each edge's C -> C
        if self.kind == "sep":
            x = depthwise_conv(F.relu(self.bn1(x)), self.dw2, 1, 1)
            return _weighted_bn(self.bn2, F.conv2d(x, self.pw2, groups=self.n), weights)
        return _weighted_bn(self.bn1, x, weights)  # (B, n*C, H/s, W/s)

    def edge_tensors(self, e: int, ref: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sl = slice(e * self.c, (e + 1) * self.c)
        seq = ref.op  # SepConv: ReLU dw pw BN ReLU dw pw BN; DilConv: ReLU dw pw BN
        yield self.dw1[sl], seq[1].weight
        yield self.pw1[sl], seq[2].weight
        yield from _bn_pairs(self.bn1, sl, seq[3])
        if self.kind == "sep":
            yield self.dw2[sl], seq[5].weight
            yield self.pw2[sl], seq[6].weight
            yield from _bn_pairs(self.bn2, sl, seq[7])


def _weighted_bn(bn: nn.BatchNorm2d, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``weight[c] * bn(x)[:, c]`` in one kernel: an affine-free BatchNorm given ``weight`` as its scale.

    The mixing weights enter as BatchNorm's affine scale (bias None), so the alpha-weighted
    term costs no separate multiplication, and its gradient comes from the BatchNorm backward.
    Statistics and buffers are updated exactly as ``nn.BatchNorm2d.forward`` does. (B, C, H, W).
    """
    use_batch = bn.training or bn.running_mean is None
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
    # the scale in the dtype of the running statistics, as BatchNorm's own parameters would be:
    # float32 next to bf16/fp16 activations under autocast (the supported mixed mode), float64 in tests
    if bn.running_mean is not None and weight.dtype != bn.running_mean.dtype:
        weight = weight.to(bn.running_mean.dtype)
    return F.batch_norm(x, bn.running_mean, bn.running_var, weight, None, use_batch, bn.momentum, bn.eps)


def _crop(weight: torch.Tensor, h: int, w: int, dilation: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Drop the taps of a 'same' depthwise kernel that can only ever see padding.

    On an h x w input a tap more than (h - 1) rows from the centre (in units of the dilation)
    multiplies zeros at every output position, for stride 1 and 2 alike, so the cropped kernel
    gives the same output and the same gradients (exactly zero for the dropped taps). Mostly the
    1x1 and 2x2 maps of the late digits cells. Returns the kernel and the padding.
    """
    c = (weight.shape[-1] - 1) // 2
    rh, rw = min(c, (h - 1) // dilation), min(c, (w - 1) // dilation)
    if rh < c or rw < c:
        weight = weight[:, :, c - rh : c + rh + 1, c - rw : c + rw + 1]
    return weight, (dilation * rh, dilation * rw)


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:
    """Depthwise 'same' convolution (padding dilation*(k-1)/2), dilation 1 or 2. (B, C, H, W) -> (B, C, H/s, W/s).

    A dilation-2 convolution only ever combines pixels of the same row and column parity, so it
    equals an undilated convolution on the four "polyphase" sub-images: with stride 2 only the
    even one is needed, with stride 1 all four, batched as channels (:func:`polyphase_conv`).
    The result is the same, and oneDNN's undilated depthwise kernels are much faster on CPU.
    Kernels are cropped to the taps that can reach the image (:func:`_crop`).
    """
    h, w = x.shape[-2:]
    if dilation == 1 or stride == 2:
        if dilation == 2:  # stride 2: the even sub-image, undilated, stride 1
            x, stride = x[:, :, ::2, ::2], 1
            h, w = x.shape[-2:]
        weight, pad = _crop(weight, h, w, 1)
        if weight.shape[-1] == 1 and weight.shape[-2] == 1:  # a 1x1 map: only the centre tap is left
            return x[:, :, ::stride, ::stride] * weight.view(1, -1, 1, 1)  # a per-channel scale, no oneDNN call
        return F.conv2d(x, weight, stride=stride, padding=pad, groups=x.shape[1])
    assert dilation == 2, dilation
    if h % 2 or w % 2:  # odd sizes have no polyphase split
        weight, pad = _crop(weight, h, w, 2)
        return F.conv2d(x, weight, padding=pad, dilation=2, groups=x.shape[1])
    return polyphase_conv(_polyphase(x, 1), weight)


def polyphase_conv(phases: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A stride-1, dilation-2 depthwise 'same' convolution, given the input's :func:`_polyphase` form.

    (B, 4C, H/2, W/2) phases, (C, 1, k, k) -> (B, C, H, W): the undilated kernel on every sub-image.
    """
    weight, pad = _crop(weight, *phases.shape[-2:], 1)
    if weight.shape[-1] == 1 and weight.shape[-2] == 1:  # 1x1 sub-images (a 2x2 map): the centre tap
        return _unpolyphase(phases * weight.repeat(4, 1, 1, 1).view(1, -1, 1, 1))
    out = F.conv2d(phases, weight.repeat(4, 1, 1, 1), padding=pad, groups=phases.shape[1])  # (B, 4C, H/2, W/2)
    return _unpolyphase(out)


def can_polyphase(x: torch.Tensor, stride: int) -> bool:
    """Whether a dilated convolution on ``x`` runs in polyphase form (stride 1, even sizes)."""
    return stride == 1 and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0


def _polyphase(x: torch.Tensor, replicas: int) -> torch.Tensor:
    """The four 2x2 polyphase sub-images of R copies of ``x`` as channels, phase-major, in one copy.

    (B, C, H, W) -> (B, 4*R*C, H/2, W/2); channel (2 py + px) R C + r C + c is x[c, 2i + py, 2j + px].
    Phase-major (unlike ``pixel_unshuffle``'s channel-major order) keeps a channel run contiguous
    in channels_last memory, so the copy moves whole runs instead of gathering single values.
    """
    b, c, h, w = x.shape
    if x.stride(1) == 1 and c > 1:  # channels innermost (channels_last, or a channel slice of it)
        y = x.permute(0, 2, 3, 1).reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5)  # (B, H/2, W/2, py, px, C)
        y = y.unsqueeze(5).expand(b, h // 2, w // 2, 2, 2, replicas, c)
        return y.reshape(b, h // 2, w // 2, 4 * replicas * c).permute(0, 3, 1, 2)  # NHWC memory
    y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)  # (B, py, px, C, H/2, W/2)
    return y.unsqueeze(3).expand(b, 2, 2, replicas, c, h // 2, w // 2).reshape(b, 4 * replicas * c, h // 2, w // 2)


def _unpolyphase(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_polyphase` (one copy). (B, 4C, H, W) -> (B, C, 2H, 2W)."""
    b, c4, h, w = y.shape
    c = c4 // 4
    if y.stride(1) == 1 and c4 > 1:
        z = y.permute(0, 2, 3, 1).reshape(b, h, w, 2, 2, c).permute(0, 1, 3, 2, 4, 5)  # (B, H, py, W, px, C)
        return z.reshape(b, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
    z = y.reshape(b, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2)  # (B, C, H, py, W, px)
    return z.reshape(b, c, 2 * h, 2 * w)


class BatchedFactorizedReduce(nn.Module):
    """The stride-2 ``skip_connect`` for ``n`` edges. (B, C, H, W) -> (B, n*C, H/2, W/2)."""

    def __init__(self, channels: int, edges: int):
        super().__init__()
        self.n, self.c = edges, channels
        self.conv_1 = nn.Parameter(torch.empty(edges * channels // 2, channels, 1, 1))
        self.conv_2 = nn.Parameter(torch.empty(edges * channels // 2, channels, 1, 1))
        self.bn = _bn(edges * channels)
        for p in (self.conv_1, self.conv_2):
            nn.init.kaiming_uniform_(p, a=5**0.5)

    def forward(self, relu_x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # relu_x: (B, C, H, W); weights: (n*C,) each output channel's mixing weight
        shifted = F.pad(relu_x[:, :, 1:, 1:], (0, 1, 0, 1))
        a = F.conv2d(relu_x, self.conv_1, stride=2)  # (B, n*C/2, H/2, W/2)
        b = F.conv2d(shifted, self.conv_2, stride=2)
        bsz, _, h, w = a.shape
        # per edge: [its conv_1 half, its conv_2 half], as FactorizedReduce concatenates them;
        # interleaved along the channel axis of whichever memory format the input has
        if a.is_contiguous(memory_format=torch.channels_last):
            a, b = a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)  # (B, H/2, W/2, n*C/2)
            out = torch.stack([a.reshape(bsz, h, w, self.n, -1), b.reshape(bsz, h, w, self.n, -1)], dim=4)
            out = out.reshape(bsz, h, w, self.n * self.c).permute(0, 3, 1, 2)
        else:
            out = torch.stack([a.view(bsz, self.n, -1, h, w), b.view(bsz, self.n, -1, h, w)], dim=2)
            out = out.reshape(bsz, self.n * self.c, h, w)
        return _weighted_bn(self.bn, out, weights)  # (B, n*C, H/2, W/2), weighted

    def edge_tensors(self, e: int, ref: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        half = self.c // 2
        yield self.conv_1[e * half : (e + 1) * half], ref.conv_1.weight
        yield self.conv_2[e * half : (e + 1) * half], ref.conv_2.weight
        yield from _bn_pairs(self.bn, slice(e * self.c, (e + 1) * self.c), ref.bn)


class SharedPoolOp(nn.Module):
    """A pooling edge: no weights and the same input on every outgoing edge, so computed once."""

    def __init__(self, kind: str, channels: int, stride: int):
        super().__init__()
        if kind == "max":
            self.pool = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        self.bn = _bn(channels)  # identical inputs give identical statistics on every edge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pool(x))  # (B, C, H/s, W/s)

    def edge_tensors(self, e: int, ref: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from _bn_pairs(self.bn, slice(None), ref[1])


def _replicate(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, n*C, H, W), channel e*C + c = x[:, c], in the memory format of ``x``.

    ``Tensor.repeat`` always returns NCHW; on CPU the depthwise convolutions are much faster in
    channels_last, so a channels_last input is replicated along its last (C) axis.
    """
    if n == 1:
        return x
    if x.stride(1) == 1 and x.shape[1] > 1:  # channels innermost: channels_last, or a strided view of it
        return x.permute(0, 2, 3, 1).repeat(1, 1, 1, n).permute(0, 3, 1, 2)  # NHWC memory, NCHW view
    return x.repeat(1, n, 1, 1)


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity whose backward hands on the gradient in channels_last memory.

    The per-edge slices of the batched outputs get their gradients back from ``select`` /
    broadcasting as plain NCHW tensors; oneDNN's BatchNorm and convolution backward fall to
    slow reference kernels when the gradient's memory format differs from the input's.
    """

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last)


def _bn_pairs(bn: nn.BatchNorm2d, sl: slice, ref_bn: nn.BatchNorm2d):
    yield bn.running_mean[sl], ref_bn.running_mean
    yield bn.running_var[sl], ref_bn.running_var


class SourceEdges(nn.Module):
    """Every operation on the edges that leave one state of a cell, alpha-weighted and summed per edge.

    (B, C, H, W) state, (E, O) mixing weights -> (B, H', W', n, C): edge e's mixed output at
    ``[:, :, :, e]``. Edges and channels are the innermost axes because that is how the batched
    operations' channels_last outputs lie in memory: the per-edge views, their sums and, in
    backward, the gradients that the per-edge slices send back all keep that layout, with no
    transposing copy between NCHW and NHWC order.
    """

    def __init__(self, channels: int, rows: list[int], stride: int, primitives: Sequence[str], k: int):
        super().__init__()
        edges = len(rows)
        self.n, self.c, self.stride = edges, channels // k, stride
        num_ops = len(primitives)
        self.ops = nn.ModuleDict()  # operations with per-edge outputs (weights, or a strided skip)
        self.shared = nn.ModuleDict()  # pools: one output shared by every edge
        shared_ops: list[int] = []
        for o, name in enumerate(primitives):
            conv = _CONV.match(name)
            if conv:
                self.ops[name] = BatchedConvOp(conv.group(1), int(conv.group(2)), self.c, edges, stride)
            elif name in ("max_pool_3x3", "avg_pool_3x3"):
                self.shared[name] = SharedPoolOp(name[:3], self.c, stride)
                shared_ops.append(o)
            elif name == "skip_connect" and stride == 2:
                self.ops[name] = BatchedFactorizedReduce(self.c, edges)
            elif name == "skip_connect":
                shared_ops.append(o)
            elif name != "none":
                raise ValueError(f"the fast supernet has no batched form of {name!r}; use implementation='reference'")
            if name in self.ops:  # (n*C,) flat indices into the (E, O) weights: each output channel's weight
                self.register_buffer(f"index_{name}", _channel_index(rows, o, num_ops, self.c), persistent=False)
        # (n_shared * n,) flat indices into the (E, O) weights, (shared op, edge) row-major
        shared_index = [r * num_ops + o for o in shared_ops for r in rows]
        self.register_buffer("shared_index", torch.tensor(shared_index, dtype=torch.long), persistent=False)
        self.num_shared = len(shared_ops)
        self.skip_shared = "skip_connect" in primitives and stride == 1
        self.op_index = {name: o for o, name in enumerate(primitives)}
        self.has_conv = any(isinstance(op, BatchedConvOp) for op in self.ops.values())
        self.has_dil = any(isinstance(op, BatchedConvOp) and op.kind == "dil" for op in self.ops.values())

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W); weights: (E, O) mixing weights of the whole cell
        flat = weights.reshape(-1)  # (E*O,)
        relu_x = F.relu(x)
        replicated = _replicate(relu_x, self.n) if self.has_conv else None  # (B, n*C, H, W), edge-major
        # the dilated convolutions' polyphase input, split once for all of them
        phases = _polyphase(relu_x, self.n) if self.has_dil and can_polyphase(x, self.stride) else None
        total = None
        for name, op in self.ops.items():
            w = flat.index_select(0, getattr(self, f"index_{name}"))  # (n*C,)
            if isinstance(op, BatchedFactorizedReduce):
                y = op(relu_x, w)
            else:
                y = op(replicated, w, phases if op.kind == "dil" else None)
            if y.is_contiguous(memory_format=torch.channels_last):
                y = _ChannelsLastGrad.apply(y)
            y = _edge_major(y, self.n)  # (B, H', W', n, C), already weighted
            total = y if total is None else total + y
        if self.num_shared:
            shared = flat.index_select(0, self.shared_index).view(self.num_shared, 1, 1, 1, self.n, 1)
            outputs = [pool(x) for pool in self.shared.values()]  # (B, C, H', W') each
            if self.skip_shared:
                outputs.append(x)  # identity
            for s, y in enumerate(outputs):
                y = y.permute(0, 2, 3, 1).unsqueeze(3)  # (B, H', W', 1, C): the same for every edge, broadcast
                # total + w_e * y in one kernel
                total = shared[s] * y if total is None else torch.addcmul(total, shared[s], y)
        return total  # (B, H', W', n, C)


def _edge_major(y: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n*C, H, W) edge-major channels -> the view (B, H, W, n, C)."""
    b, nc, h, w = y.shape
    return y.permute(0, 2, 3, 1).reshape(b, h, w, n, nc // n)  # a view for NHWC (and NCHW) memory


def _channel_index(rows: Sequence[int], op: int, num_ops: int, channels: int) -> torch.Tensor:
    """(n*C,) flat indices into the (E, O) weights: the mixing weight of every (edge, channel)."""
    return torch.tensor([r * num_ops + op for r in rows for _ in range(channels)], dtype=torch.long)


class FastSearchCell(nn.Module):
    """A search cell with the reference's signature and function, batched per source state."""

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
        self.reduction, self.steps, self.multiplier, self.k = reduction, steps, multiplier, partial_channels
        self.preprocess0, self.preprocess1 = cell_inputs(c_prev_prev, c_prev, channels, reduction_prev)
        self.op_index = {name: i for i, name in enumerate(primitives)}
        # state j feeds nodes first_node(j) .. steps-1; the last node feeds nothing
        # reference edge index of (node i, source j): node i's edges start after 2 + 3 + ... edges
        self.edge_index = [[sum(2 + t for t in range(i)) + j for j in range(2 + i)] for i in range(steps)]
        self.sources = nn.ModuleList(
            SourceEdges(
                channels,
                [self.edge_index[i][j] for i in range(self.first_node(j), steps)],
                2 if reduction and j < 2 else 1,
                primitives,
                partial_channels,
            )
            for j in range(steps + 1)
        )
        for j, source in enumerate(self.sources):  # (n,) edge weights of PC-DARTS, per source
            rows = [self.edge_index[i][j] for i in range(self.first_node(j), steps)]
            self.register_buffer(f"rows{j}", torch.tensor(rows, dtype=torch.long), persistent=False)
        self.bypass_pool = nn.MaxPool2d(2, 2, ceil_mode=True) if partial_channels > 1 and reduction else None

    @staticmethod
    def first_node(j: int) -> int:
        return max(0, j - 1)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor | None = None) -> torch.Tensor:
        # s0, s1: (B, C_pp, H0, W0), (B, C_p, H, W); weights: (E, O) softmax(alpha); edge_weights: (E,) or None
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # 2 x (B, C, H, W)
        if edge_weights is not None:
            weights = weights * edge_weights[:, None]  # (E, O): PC-DARTS scales each edge's ops
        mixed: list[torch.Tensor | None] = [None] * self.steps  # alpha-weighted sums per node
        bypass: list[torch.Tensor | None] = [None] * self.steps  # PC-DARTS: channels that skip the ops
        for j, source in enumerate(self.sources):
            x = states[j]
            c = x.shape[1] // self.k
            total = source(x[:, :c] if self.k > 1 else x, weights)  # (B, H', W', n, C/k)
            if self.k > 1:
                beta = edge_weights.index_select(0, getattr(self, f"rows{j}"))  # (n,)
                rest = x[:, c:]
                if self.bypass_pool is not None and j < 2:
                    rest = self.bypass_pool(rest)
            for e, i in enumerate(range(self.first_node(j), self.steps)):
                edge = total[:, :, :, e].permute(0, 3, 1, 2)  # (B, C/k, H', W'), NHWC-strided
                mixed[i] = edge if mixed[i] is None else mixed[i] + edge
                if self.k > 1:
                    part = beta[e] * rest  # (B, C - C/k, H', W')
                    bypass[i] = part if bypass[i] is None else bypass[i] + part
            if j >= 1:  # node j-1 takes states 0..j, so it is complete now
                states.append(self._finish(mixed[j - 1], bypass[j - 1]))
        return torch.cat(states[-self.multiplier :], dim=1)  # (B, multiplier * C, H', W')

    def _finish(self, mixed: torch.Tensor, bypass: torch.Tensor | None) -> torch.Tensor:
        if bypass is None:
            return mixed
        # shuffle is a channel permutation, so the sum of shuffled edges is the shuffled sum
        return channel_shuffle(torch.cat([mixed, bypass], dim=1), self.k)


class FastSearchNetwork(SearchNetwork, FastSupernet):
    """:class:`SearchNetwork` with :class:`FastSearchCell` cells; same alpha, same genotype logic.

    ``channels_last`` keeps weights and activations in NHWC memory: on CPU oneDNN's depthwise
    convolutions are much faster there than in NCHW (``Tensor.to(device)`` preserves the
    format, so it survives moving to a GPU; pass False to compare, e.g. with
    ``benchmarks/darts_search_step.py --no-channels-last``).
    """

    cell_class = FastSearchCell

    def __init__(self, *args, channels_last: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # (B, C, H, W) view of NHWC memory
        return super().forward_features(x)

    def edge_tensor_pairs(self, ref: SearchNetwork) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return edge_tensor_pairs(self, ref)


def edge_tensor_pairs(fast: FastSearchNetwork, ref: SearchNetwork) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(slice of a fast tensor, the reference tensor it equals) for every per-edge weight and statistic."""
    for fast_cell, ref_cell in zip(fast.cells, ref.cells):
        for j, source in enumerate(fast_cell.sources):
            for e, i in enumerate(range(fast_cell.first_node(j), fast_cell.steps)):
                ref_edge = ref_cell.edges[fast_cell.edge_index[i][j]]
                for name, op in source.ops.items():
                    yield from op.edge_tensors(e, ref_edge.ops[source.op_index[name]])
                for name, pool in source.shared.items():
                    yield from pool.edge_tensors(e, ref_edge.ops[source.op_index[name]])
