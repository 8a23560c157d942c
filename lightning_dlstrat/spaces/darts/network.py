"""The DARTS evaluation network: a stack of cells built from a discrete genotype.

The CIFAR network of Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search" (ICLR 2019,
Sec. 3.2 and App. A.2; quark0/darts ``cnn/model.py`` ``NetworkCIFAR``): a 3x3 conv stem with
``stem_multiplier * C`` channels, ``layers`` cells with reduction cells (stride 2, channels
doubled) at 1/3 and 2/3 of the depth, each cell reading the outputs of the two previous cells
(the older one through a FactorizedReduce when the previous cell halved the resolution), an
auxiliary classifier on the output of the second reduction cell, scheduled drop-path on every
non-identity op, and global average pooling + a linear classifier.

Same layers, same parameter count and the same state-dict keys as the reference for the same
genotype and size (DARTS_V2, C=36, 20 cells: 3,349,342 parameters without the auxiliary head,
the "3.3M" of the paper's Table 1). Differences, all for inputs the reference never saw:
- ``in_chans`` and any input size (1x8x8 digits up to 3x32x32 and beyond);
- the auxiliary head pools with the reference's 5x5/stride-3 window when its input is 8x8 (CIFAR,
  -> 2x2) and with an adaptive average pool to 2x2 on any other size (2x2 for 8x8 digits), so its
  2x2 convolution and 768-wide classifier (and its parameter count) fit every input size;
- ``forward`` always returns logits (timm convention); :meth:`forward_with_aux` returns
  ``(logits, aux_logits)`` for training, ``aux_logits`` being ``None`` unless the network is in
  training mode and has the auxiliary head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...hub import HubMixin
from .ops import OPS, Identity, cell_inputs, reduction_layers
from ...layers.drop import drop_path
from ...layers.features import take_indices
from ...layers.pool import GlobalPool
from .genotype import Genotype


class Cell(nn.Module):
    """One normal or reduce cell of a genotype (reference ``Cell``; same submodule names)."""

    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.preprocess0, self.preprocess1 = cell_inputs(c_prev_prev, c_prev, c, reduction_prev, affine=True)
        pairs = genotype.reduce if reduction else genotype.normal
        self.concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self.steps, self.multiplier, self.reduction = len(pairs) // 2, len(self.concat), reduction
        self.indices = [j for _, j in pairs]
        # `_ops` (not `ops`) keeps state-dict keys identical to the reference's checkpoints
        self._ops = nn.ModuleList(OPS[op](c, 2 if reduction and j < 2 else 1, True) for op, j in pairs)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # (B, c, H, W) each
        for i in range(self.steps):
            h = []
            for k in (2 * i, 2 * i + 1):
                op = self._ops[k]
                out = op(states[self.indices[k]])  # (B, c, H', W')
                # drop-path on every op except identity, as the reference: dropping a skip would
                # remove the only path some nodes have to the cell inputs
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    out = drop_path(out, drop_prob, training=True)
                h.append(out)
            states.append(h[0] + h[1])
        return torch.cat([states[i] for i in self.concat], dim=1)  # (B, multiplier * c, H', W')


class AuxPool(nn.Module):
    """The reference's 5x5 / stride-3 average pool on 8x8 maps (-> 2x2), an adaptive 2x2 average pool
    on any other size (the reference window would give 1x1 or fail on the 2x2 maps of 8x8 digits,
    and more than 2x2 on larger images, which the 768-wide classifier cannot take)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (8, 8):
            return F.avg_pool2d(x, 5, stride=3, padding=0, count_include_pad=False)  # (B, C, 2, 2)
        return F.adaptive_avg_pool2d(x, 2)  # (B, C, 2, 2)


class AuxiliaryHead(nn.Module):
    """The reference ``AuxiliaryHeadCIFAR``: pool to 2x2, 1x1 conv to 128, 2x2 conv to 768, linear."""

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            AuxPool(),  # (B, c, 2, 2)
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),  # (B, 768, 1, 1)
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))  # (B, num_classes)


class DARTSNetwork(nn.Module, HubMixin, architecture="darts_net", kind="classifier", tags=["image-classification", "darts", "nas"], paper_url="https://arxiv.org/abs/1806.09055"):
    """The evaluation network of a genotype.

    Example::

        net = DARTSNetwork("DARTS_V2", C=36, layers=20, auxiliary=True)  # the paper's CIFAR-10 model
        net.drop_path_rate = 0.2 * epoch / epochs                        # set per epoch by the trainer
        logits, aux_logits = net.forward_with_aux(images)                # training
        logits = net.eval()(images)                                      # (B, num_classes)
    """

    # timm's defaults for the entry point (lightning_dlstrat.timm_models): the paper's CIFAR-10 network
    timm_cfg = dict(
        input_size=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        first_conv="stem.0", classifier="classifier", paper_ids="arXiv:1806.09055",
    )
    timm_kwargs_filter: tuple[str, ...] = ()

    def __init__(
        self,
        genotype: Genotype | dict | str = "DARTS_V2",  # a Genotype, its JSON mapping, a built-in name or genotype text (never a file)
        C: int = 36,  # channels of the first cells (36 in the paper's CIFAR-10 network)
        layers: int = 20,  # cells (20 for CIFAR-10)
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: int | tuple[int, int] | None = None,  # checked at construction when given
        auxiliary: bool = False,  # auxiliary classifier at 2/3 depth (weight 0.4 in the paper)
        stem_multiplier: int = 3,
        drop_path_rate: float = 0.0,  # timm's name; the DARTS trainer schedules it, 0.2 * epoch / epochs in the paper
        global_pool: str = "avg",  # timm's names: "avg", "max" or "avgmax"
    ):
        super().__init__()
        if C < 1 or layers < 1:
            raise ValueError(f"C and layers must be positive, got C={C}, layers={layers}")
        self.genotype = Genotype.coerce(genotype)
        self.C, self.layers, self.num_classes, self.in_chans = C, layers, num_classes, in_chans
        self.auxiliary, self.drop_path_rate = auxiliary, drop_path_rate
        self.reductions = reduction_layers(layers)
        self.aux_index = 2 * layers // 3  # the auxiliary head reads this cell's output
        if img_size is not None:
            img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
            self.check_input_size(img_size)
        self.img_size = img_size

        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_chans, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, C
        self.cells = nn.ModuleList()
        self.feature_info: list[dict] = []
        reduction_prev, c_aux = False, None
        for i in range(layers):
            reduction = i in self.reductions
            if reduction:
                c_curr *= 2
            cell = Cell(self.genotype, c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            if reduction and i > 0:  # timm's feature_info: the map entering each reduction
                self.feature_info.append(dict(num_chs=c_prev, reduction=2 ** len(self.feature_info), module=f"cells.{i - 1}"))
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
            if i == self.aux_index:
                c_aux = c_prev
        if auxiliary:
            self.auxiliary_head = AuxiliaryHead(c_aux, num_classes)
        self.feature_info.append(dict(num_chs=c_prev, reduction=2 ** len(self.feature_info), module=f"cells.{layers - 1}"))
        self.global_pool = GlobalPool(global_pool)
        self.num_features = c_prev
        self.classifier = nn.Linear(c_prev, num_classes) if num_classes > 0 else nn.Identity()

    # --- input checks ----------------------------------------------------------------------------
    @property
    def min_input_size(self) -> int:
        """Smallest height/width for which every reduction cell halves a map of at least 2x2."""
        return 2 ** len(self.reductions)

    def check_input_size(self, hw: tuple[int, int]) -> None:
        if min(hw) < self.min_input_size:
            raise ValueError(
                f"input {hw[0]}x{hw[1]} is too small for {self.layers} cells with {len(self.reductions)} reduction cell(s): "
                f"each halves the resolution, so height and width must be at least {self.min_input_size}; "
                "use larger images or fewer layers"
            )

    # --- timm-style API --------------------------------------------------------------------------
    def _cells(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.check_input_size(tuple(x.shape[-2:]))
        aux_logits = None
        s0 = s1 = self.stem(x)  # (B, stem_multiplier * C, H, W)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_rate)  # (B, multiplier * c_i, H_i, W_i)
            if with_aux and i == self.aux_index:
                aux_logits = self.auxiliary_head(s1)  # (B, num_classes)
        return s1, aux_logits

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._cells(x, with_aux=False)[0]  # (B, num_features, H / 4, W / 4)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)  # (B, num_features)
        return x if pre_logits else self.classifier(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, num_classes)

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False, stop_early: bool = False,
        output_fmt: str = "NCHW", intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the maps of ``feature_info`` (one per resolution), as ``features_only=True`` returns them.

        ``indices``: which (None: all; n: the last n); ``norm`` has no effect (there is no final
        norm). Returns the list, or ``(final_features, list)`` unless ``intermediates_only``.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"DARTSNetwork gives NCHW features only, not {output_fmt!r}")
        take = take_indices(len(self.feature_info), indices)
        at = {int(self.feature_info[i]["module"].split(".")[1]): i for i in take}
        self.check_input_size(tuple(x.shape[-2:]))
        out: list[torch.Tensor] = []
        s0 = s1 = self.stem(x)  # (B, stem_multiplier * C, H, W)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_rate)  # (B, multiplier * c_i, H_i, W_i)
            if i in at:
                out.append(s1)
            if stop_early and len(out) == len(take):
                break
        return out if intermediates_only else (s1, out)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits, aux_logits)``; ``aux_logits`` only in training mode with the auxiliary head, else None."""
        features, aux_logits = self._cells(x, with_aux=self.auxiliary and self.training)
        return self.forward_head(features), aux_logits

    def get_classifier(self) -> nn.Module:
        return self.classifier

    @property
    def classifier_names(self) -> tuple[str, ...]:
        """Every head that maps to classes (timm's ``pretrained_cfg["classifier"]``): reset together on a new ``num_classes``."""
        return ("classifier", "auxiliary_head.classifier") if self.auxiliary else ("classifier",)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New (untrained) classifiers for ``num_classes`` (0: pre-logit features), and a new pooling if given."""
        if global_pool is not None:
            self.global_pool = GlobalPool(global_pool)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if self.auxiliary:
            self.auxiliary_head.classifier = nn.Linear(768, num_classes) if num_classes > 0 else nn.Identity()
