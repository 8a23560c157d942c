"""timm entrypoints for this package's image classifiers: ``darts_net`` and ``dlstrat_mlp``.

timm never imports third-party code; a library registers its architectures so that
``timm.create_model`` finds them once it is imported (rwightman, huggingface/pytorch-image-models
#1751). ``import lightning_dlstrat`` imports this module, after which::

    timm.create_model("darts_net", genotype="DARTS_V2", num_classes=10)      # untrained, CIFAR-10 size
    timm.create_model("hf-hub:ORG/NAME", pretrained=True)                    # a classifier from `dlstrat push`
    timm.create_model("local-dir:lightning_dlstrat/zoo_models/mlp-digits", pretrained=True)

Our config.json is in timm's format (``architecture``, ``num_classes``, ``num_features``,
``model_args``, ``pretrained_cfg``; see :mod:`lightning_dlstrat.hub`), so timm reads the
architecture and its arguments (a DARTS genotype in ``model_args``) itself. Weights are loaded here
rather than by timm's loader, through :func:`lightning_dlstrat.hub.fetch`: safetensors only (timm
would fall back to ``torch.load`` of a ``pytorch_model.bin``), strict, checked against the Hub's
ETag, and purged from the cache when bad.

Layout as timm's model files (``timm/models/convmixer.py``): ``_create``, ``_cfg``,
``default_cfgs``, then one-line ``@register_model`` entrypoints.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .hub import WEIGHTS_NAME, HubError, fetch, load_weights
from .registry import load_target

__all__ = ["darts_net", "dlstrat_mlp"]


def _pretrained_weights(model: torch.nn.Module, cfg: dict[str, Any]) -> None:
    """Load ``model.safetensors`` from where timm found config.json (a Hub repo or a local folder)."""
    if cfg.get("hf_hub_id"):
        repo_id, _, revision = cfg["hf_hub_id"].partition("@")
        where, files = cfg["hf_hub_id"], fetch(repo_id, (WEIGHTS_NAME,), revision=revision or None)
    elif cfg.get("file"):
        where, files = cfg["file"], fetch(cfg["file"], (WEIGHTS_NAME,))
    else:
        raise HubError(f"{cfg.get('architecture')} has no built-in pretrained weights; load a published one with timm.create_model('hf-hub:ORG/NAME', pretrained=True)")
    load_weights(model, files[WEIGHTS_NAME], where)


def _create(variant: str, target: str, pretrained: bool = False, kwargs_filter: tuple[str, ...] = (), **kwargs) -> torch.nn.Module:
    from .models.genotype import Genotype

    if isinstance(kwargs.get("genotype"), dict):  # from config.json's model_args
        kwargs["genotype"] = Genotype.from_dict(kwargs["genotype"])
    model = build_model_with_cfg(load_target(target), variant, pretrained=False, kwargs_filter=kwargs_filter, **kwargs)
    if pretrained:
        _pretrained_weights(model, model.pretrained_cfg)
    return model


def _cfg(**kwargs) -> dict[str, Any]:
    return {"num_classes": 10, "crop_pct": 1.0, "license": "apache-2.0", "origin_url": "https://github.com/lightning-dlstrat/lightning-dlstrat", **kwargs}


default_cfgs = generate_default_cfgs({
    # the paper's CIFAR-10 network (Liu et al. 2019); weights come from Hub repos (hf-hub:)
    "darts_net": _cfg(input_size=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), first_conv="stem.0", classifier="classifier", paper_ids="arXiv:1806.09055"),
    "dlstrat_mlp": _cfg(input_size=(1, 28, 28), mean=(0.1307,), std=(0.3081,), classifier="head"),
})


@register_model
def darts_net(pretrained: bool = False, **kwargs) -> torch.nn.Module:
    """DARTS evaluation network of a genotype (``genotype=`` a name, text or Genotype; C, layers, ...)."""
    return _create("darts_net", "lightning_dlstrat.models.darts_net:DARTSNetwork", pretrained, **kwargs)


@register_model
def dlstrat_mlp(pretrained: bool = False, **kwargs) -> torch.nn.Module:
    """The MLP classifier (``in_shape``, ``hidden``, ...); it flattens its input, so timm's in_chans is dropped."""
    return _create("dlstrat_mlp", "lightning_dlstrat.models.mlp:MLP", pretrained, kwargs_filter=("in_chans",), **kwargs)
