"""A multilayer perceptron classifier: the classic 784-128-10 network and its relatives.

A plain ``nn.Module`` (training logic lives in :mod:`lightning_dlstrat.trainers.classifier`).
Follows timm's model API: ``forward_features`` returns the last hidden activations,
``forward_head`` maps them to logits. :class:`~lightning_dlstrat.hub.HubMixin` adds
``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` (architecture ``dlstrat_mlp``).
"""

from __future__ import annotations

from math import prod

import torch
from torch import nn

from ..hub import HubMixin

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}
NORMS = {"none": None, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


class MLP(nn.Module, HubMixin, architecture="dlstrat_mlp", kind="classifier", tags=["image-classification", "mlp"]):
    # timm's defaults for the entry point (lightning_dlstrat.timm_models); it flattens its input,
    # so timm's in_chans is dropped
    timm_cfg = dict(input_size=(1, 28, 28), mean=(0.1307,), std=(0.3081,), classifier="head")
    timm_kwargs_filter: tuple[str, ...] = ("in_chans",)

    def __init__(
        self,
        in_shape: tuple[int, ...] | list[int] = (1, 28, 28),  # flattened: 784 features by default
        num_classes: int = 10,
        hidden: tuple[int, ...] | list[int] = (128,),  # one layer of 128: the classic 784-128-10 net
        activation: str = "relu",  # one of ACTIVATIONS
        dropout: float = 0.0,  # after every hidden activation
        norm: str = "none",  # "none", "batch" or "layer", before every activation
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
        self.in_shape, self.num_classes = tuple(in_shape), num_classes
        layers: list[nn.Module] = [nn.Flatten()]
        width = prod(self.in_shape)
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if NORMS[norm] is not None:
                layers.append(NORMS[norm](h))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, *in_shape) -> (B, num_features)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
