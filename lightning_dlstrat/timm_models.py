"""timm entrypoints for this package's image classifiers: ``darts_net`` and ``dlstrat_mlp``.

timm never imports third-party code; a library registers its architectures so that
``timm.create_model`` finds them once it is imported (rwightman, huggingface/pytorch-image-models
#1751). ``import lightning_dlstrat`` imports this module, after which::

    timm.create_model("darts_net", genotype="DARTS_V2", num_classes=10)      # untrained, CIFAR-10 size
    timm.create_model("hf-hub:ORG/NAME", pretrained=True)                    # a classifier from `dlstrat push`
    timm.create_model("local-dir:zoo/mlp-digits", pretrained=True)          # a zoo folder (checkout)

Our config.json is in timm's format (``architecture``, ``num_classes``, ``num_features``,
``model_args``, ``pretrained_cfg``; see :mod:`lightning_dlstrat.hub`), so timm reads the
architecture and its arguments (a DARTS genotype in ``model_args``) itself. Weights are loaded here
rather than by timm's loader, through :func:`lightning_dlstrat.hub.fetch`: safetensors only (timm
would fall back to ``torch.load`` of a ``pytorch_model.bin``), strict, checked against the Hub's
ETag, and purged from the cache when bad.

The entry points are made from the architecture registry (:data:`lightning_dlstrat.hub.ARCHITECTURES`,
kind ``"classifier"``), each class giving its timm defaults in ``timm_cfg``: adding a classifier
touches only its own file. Layout otherwise as timm's model files (``timm/models/convmixer.py``):
``_create``, ``_cfg``, ``default_cfgs``, then the registered entry points.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from . import models, spaces  # noqa: F401  (register the networks in hub.ARCHITECTURES)
from .hub import WEIGHTS_NAME, HubError, architectures, fetch, load_weights

__all__: list[str] = []  # register_model appends each entry point's name


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


def _create(variant: str, cls: type, pretrained: bool = False, **kwargs) -> torch.nn.Module:
    # the network decodes its own genotype (a dict from config.json's model_args, a name, text)
    model = build_model_with_cfg(cls, variant, pretrained=False, kwargs_filter=cls.timm_kwargs_filter, **kwargs)
    if pretrained:
        _pretrained_weights(model, model.pretrained_cfg)
    return model


def _cfg(**kwargs) -> dict[str, Any]:
    return {"num_classes": 10, "crop_pct": 1.0, "license": "apache-2.0", "origin_url": "https://github.com/lightning-dlstrat/lightning-dlstrat", **kwargs}


def _entrypoint(name: str, cls: type):
    def entrypoint(pretrained: bool = False, **kwargs) -> torch.nn.Module:
        return _create(name, cls, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name  # timm registers an entry point under its __name__
    entrypoint.__doc__ = f"{cls.__name__} ({cls.__module__}); keyword arguments are its __init__'s."
    return entrypoint


CLASSIFIERS = architectures("classifier")
default_cfgs = generate_default_cfgs({name: _cfg(**cls.timm_cfg) for name, cls in CLASSIFIERS.items()})
for _name, _cls in CLASSIFIERS.items():
    globals()[_name] = register_model(_entrypoint(_name, _cls))
