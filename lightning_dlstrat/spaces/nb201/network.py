"""The NAS-Bench-201 evaluation network: the benchmark's macro skeleton around one genotype's cell.

Dong & Yang, "NAS-Bench-201", ICLR 2020, Sec. 2.1 and Fig. 1 (the code of record is
D-X-Y/AutoDL-Projects ``xautodl/models/cell_infers/tiny_network.py`` and ``cells.py``):

    stem: Conv3x3(in_chans -> C) + BN
    N cells at C    -> ResNet block (stride 2) C -> 2C
    N cells at 2C   -> ResNet block (stride 2) 2C -> 4C
    N cells at 4C   -> BN + ReLU -> global average pool -> Linear(4C -> num_classes)

with C = 16, N = 5 in the benchmark. Every BatchNorm is affine and tracks running statistics, so
the cells' convolutions have no bias. The parameter count equals the benchmark's for the same
cell (``tests/test_spaces.py`` checks the published counts). Module names follow the benchmark's
(``stem``, ``cells.<i>.layers.<k>``, ``conv_a``/``conv_b``/``downsample``, ``lastact``,
``classifier``) so that its state-dict keys line up.

Differences, both outside what the benchmark defines: ``in_chans`` and any input of at least 4x4
pixels (1x8x8 digits as well as 3x32x32 CIFAR), and ``forward`` returns the logits alone (timm's
convention; the benchmark's returns ``(features, logits)``).
"""

from __future__ import annotations

import torch
from torch import nn

from ...hub import HubMixin
from ...layers.features import take_indices
from ...layers.pool import GlobalPool
from .genotype import NB201Genotype, NUM_NODES
from .ops import make_op, stages

__all__ = ["NB201Cell", "NB201Network", "MIN_INPUT_SIZE", "check_input_size", "resolve_nb201"]

# two stride-2 blocks each halve a map of at least 2x2
MIN_INPUT_SIZE = 4


def resolve_nb201(genotype: NB201Genotype | dict | str) -> NB201Genotype:
    """A genotype, its JSON mapping (config.json's model_args) or the benchmark's string; never a file."""
    if isinstance(genotype, NB201Genotype):
        return genotype
    return NB201Genotype.from_dict(genotype) if isinstance(genotype, dict) else NB201Genotype.parse(genotype)


def check_input_size(x: torch.Tensor, in_chans: int) -> None:
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"expected images of shape (B, {in_chans}, H, W), got {tuple(x.shape)}")
    if min(x.shape[-2:]) < MIN_INPUT_SIZE:
        raise ValueError(
            f"input {x.shape[-2]}x{x.shape[-1]} is too small: the NAS-Bench-201 skeleton halves the resolution twice, "
            f"so height and width must be at least {MIN_INPUT_SIZE}"
        )


class NB201Cell(nn.Module):
    """One cell of a genotype: node t = sum over s < t of op(s -> t)(node s); the output is node 3."""

    def __init__(self, genotype: NB201Genotype, channels: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.genotype = genotype
        # one layer per edge in the benchmark's order (node 1 from 0; node 2 from 0, 1; node 3 from 0, 1, 2)
        self.layers = nn.ModuleList(make_op(op, channels, affine, track_running_stats) for _, _, op in genotype.edges())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]  # node 0: (B, C, H, W)
        k = 0
        for t in range(1, NUM_NODES):
            total = self.layers[k](nodes[0])
            for s in range(1, t):
                total = total + self.layers[k + s](nodes[s])
            k += t
            nodes.append(total)  # (B, C, H, W)
        return nodes[-1]


class NB201Network(nn.Module, HubMixin, architecture="nb201_net", kind="classifier", tags=["image-classification", "nas", "nas-bench-201"], paper_url="https://arxiv.org/abs/2001.00326"):
    """The benchmark's evaluation network for ``genotype``, with a timm-style API.

    Example::

        net = NB201Network("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
        sum(p.numel() for p in net.parameters())  # 1,288,506: the benchmark's 1.288506 MB on CIFAR-10
        net(torch.randn(2, 3, 32, 32))            # (2, 10) logits
    """

    # timm's defaults for the entry point (lightning_dlstrat.timm_models): the benchmark's CIFAR-10 network
    timm_cfg = dict(input_size=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), first_conv="stem.0", classifier="classifier", paper_ids="arXiv:2001.00326")
    timm_kwargs_filter: tuple[str, ...] = ()

    def __init__(
        self,
        genotype: NB201Genotype | dict | str,  # the benchmark's string, its JSON mapping or an NB201Genotype
        C: int = 16,  # channels of the first stage (16 in the benchmark)
        N: int = 5,  # cells per stage (5 in the benchmark)
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",  # timm's names: "avg" (the benchmark's), "max" or "avgmax"
    ):
        super().__init__()
        if C < 1 or N < 0 or in_chans < 1 or num_classes < 0:
            raise ValueError(f"need C >= 1, N >= 0, in_chans >= 1, num_classes >= 0; got C={C}, N={N}, in_chans={in_chans}, num_classes={num_classes}")
        self.genotype = resolve_nb201(genotype)
        self.C, self.N, self.num_classes, self.in_chans = C, N, num_classes, in_chans
        self.stem = nn.Sequential(nn.Conv2d(in_chans, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells, c_prev = stages(C, N, lambda c: NB201Cell(self.genotype, c))
        self.num_features = c_prev
        # timm's feature_info: the last cell of each stage (the last one after lastact, as forward_features)
        self.feature_info = [dict(num_chs=C * 2**k, reduction=2**k, module=f"cells.{(k + 1) * (N + 1) - 2}") for k in range(3)]
        self.feature_info[-1]["module"] = "lastact"
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pool = GlobalPool(global_pool)
        self.classifier = nn.Linear(c_prev, num_classes) if num_classes > 0 else nn.Identity()

    # --- timm-style API --------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.in_chans)
        x = self.stem(x)  # (B, C, H, W)
        for cell in self.cells:
            x = cell(x)  # (B, C_stage, H_stage, W_stage)
        return self.lastact(x)  # (B, num_features, ceil(H/4), ceil(W/4))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)  # (B, num_features)
        return x if pre_logits else self.classifier(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, num_classes)

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False, stop_early: bool = False,
        output_fmt: str = "NCHW", intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the output of each stage (``feature_info``), as ``features_only=True`` returns them.

        ``indices``: which (None: all three; n: the last n). The last map is taken after the final
        BN + ReLU (``lastact``), as ``forward_features`` returns it; ``norm`` changes nothing.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"NB201Network gives NCHW features only, not {output_fmt!r}")
        take = take_indices(len(self.feature_info), indices)
        check_input_size(x, self.in_chans)
        ends = {len(self.cells) - 1 if k == 2 else int(self.feature_info[k]["module"].split(".")[1]): k for k in take}
        out: list[torch.Tensor] = []
        x = self.stem(x)  # (B, C, H, W)
        for i, cell in enumerate(self.cells):
            x = cell(x)  # (B, C_stage, H_stage, W_stage)
            if i == len(self.cells) - 1:
                x = self.lastact(x)
            if i in ends:
                out.append(x)
            if stop_early and len(out) == len(take):
                break
        return out if intermediates_only else (x, out)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new (untrained) classifier for ``num_classes`` (0: the pooled features), and a new pooling if given."""
        if global_pool is not None:
            self.global_pool = GlobalPool(global_pool)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
