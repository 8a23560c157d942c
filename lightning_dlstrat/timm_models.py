"""timm entrypoints for this package's image classifiers (``darts_net``, ``nb201_net``, ``dlstrat_mlp``) and the zoo's pretrained tags.

timm never imports third-party code; a library registers its architectures so that
``timm.create_model`` finds them once it is imported (rwightman, huggingface/pytorch-image-models
#1751). ``import lightning_dlstrat`` imports this module, after which::

    timm.create_model("darts_net", genotype="DARTS_V2", num_classes=10)      # untrained, CIFAR-10 size
    timm.create_model("hf-hub:ORG/NAME", pretrained=True)                    # a classifier from `dlstrat push`
    timm.create_model("local-dir:zoo/mlp-digits", pretrained=True)          # a zoo folder (checkout)

    timm.create_model("darts_net.digits", pretrained=True)                  # the zoo's darts-digits, offline
    timm.create_model("hf-hub:ORG/NAME", pretrained=True, num_classes=5)     # body loaded, new 5-way head
    timm.create_model("darts_net", features_only=True)                       # feature maps at each reduction

Our config.json is in timm's format (``architecture``, ``num_classes``, ``num_features``,
``model_args``, ``pretrained_cfg``; see :mod:`lightning_dlstrat.hub`), so timm reads the
architecture and its arguments (a DARTS genotype in ``model_args``) itself. The weights file is
found here, through :func:`lightning_dlstrat.hub.fetch` (safetensors only: timm would fall back to
``torch.load`` of a ``pytorch_model.bin``; checked against the Hub's ETag), then loaded by timm's
own ``load_pretrained``, which follows timm's conventions: a ``num_classes`` other than the
weights' leaves a new head, another ``in_chans`` adapts the first convolution.

The entry points are made from the architecture registry (:data:`lightning_dlstrat.hub.ARCHITECTURES`,
kind ``"classifier"``: the package's own and those of installed plugins), each class giving its timm defaults in ``timm_cfg``: adding a classifier
touches only its own file. Layout otherwise as timm's model files (``timm/models/convmixer.py``):
``_create``, ``_cfg``, ``default_cfgs``, then the registered entry points.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, load_pretrained, register_model

from .hub import CONFIG_NAME, WEIGHTS_NAME, HubError, architectures, fetch
from .zoo import SUMMARY_NAME, entries

__all__: list[str] = []  # register_model appends each entry point's name


# --- pretrained tags: the zoo's trained classifiers ----------------------------------------------
def zoo_tags() -> dict[str, tuple[str, dict[str, Any]]]:
    """``"ARCH.DATA"`` -> (zoo model name, its config.json) for every trained classifier the zoo ships.

    So ``timm.create_model("darts_net.digits", pretrained=True)`` builds the zoo's ``darts-digits``
    (its ``model_args`` from the packaged config.json, the user's kwargs on top) and loads its
    packaged weights, offline; ``timm.list_pretrained("darts*")`` lists it. The tag's ``hf_hub_id``
    is the zoo model's Hub repo.
    """
    tags: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, entry in entries().items():
        if entry.kind != "weights" or entry.config.get("architecture") not in CLASSIFIERS:
            continue
        summary = entry.folder / SUMMARY_NAME
        data = json.loads(summary.read_text()).get("data") if summary.is_file() else None
        tag = f"{entry.config['architecture']}.{data or name}"
        tags.setdefault(tag, (name, entry.config))
    return tags


def _weights_file(cfg: dict[str, Any]) -> tuple[Path, str]:
    """The safetensors file timm's config points at, fetched by :func:`~lightning_dlstrat.hub.fetch` (ETag-checked)."""
    if cfg.get("file"):  # local-dir:FOLDER, or pretrained_cfg_overlay=dict(file=FOLDER or .../model.safetensors)
        path = Path(cfg["file"])
        if path.is_file():
            if path.suffix != ".safetensors":
                raise HubError(f"{path} is not a .safetensors file; lightning-dlstrat loads weights from safetensors only, never by unpickling")
            return path, str(path)
        return fetch(path, (WEIGHTS_NAME,))[WEIGHTS_NAME], str(path)
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        raise HubError(f"{cfg.get('architecture')} has no built-in pretrained weights; load a published one with timm.create_model('hf-hub:ORG/NAME', pretrained=True)")
    repo_id, _, revision = hub_id.partition("@")
    packaged = {entry.repo_id: entry for entry in entries().values()}.get(repo_id)
    if cfg.get("source") != "hf-hub" and packaged is not None and not revision:  # a zoo tag: the copy in the wheel
        return packaged.folder / WEIGHTS_NAME, f"{packaged.folder} (zoo model {packaged.name})"
    return fetch(repo_id, (WEIGHTS_NAME,), revision=revision or None)[WEIGHTS_NAME], hub_id


def _pretrained_weights(model: torch.nn.Module, cfg: dict[str, Any], strict: bool = True) -> None:
    """Load the weights with timm's ``load_pretrained``: a head of another ``num_classes`` is left new, ``in_chans`` adapted.

    The file is found (and checked) here; timm reads it with safetensors, never ``torch.load``.
    """
    path, where = _weights_file(cfg)
    # the first conv is adapted here (timm before 1.0.31 adapts only from 3-channel weights), so timm leaves it alone
    local = {**cfg, "source": "", "file": str(path), "state_dict": None, "first_conv": None}
    if hasattr(model, "classifier_names"):  # the network knows all its heads (older config.json files name one)
        local["classifier"] = model.classifier_names
    first_conv = cfg.get("first_conv") or getattr(model, "timm_cfg", {}).get("first_conv")

    def adapt(state: dict[str, torch.Tensor], net: torch.nn.Module) -> dict[str, torch.Tensor]:
        key = f"{first_conv}.weight"
        if first_conv and key in state and hasattr(net, "in_chans") and state[key].shape[1] != net.in_chans:
            state[key] = adapt_input_conv(state[key], net.in_chans)  # (O, B, k, k) -> (O, in_chans, k, k)
        return state

    try:
        load_pretrained(model, local, num_classes=model.num_classes, in_chans=getattr(model, "in_chans", 3), filter_fn=adapt, strict=strict)
    except RuntimeError as e:  # missing / unexpected keys or shape mismatches under strict loading
        raise HubError(f"the weights in {where} do not fit the network built (for other sizes, pass the sizes of {CONFIG_NAME}):\n{e}") from None


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A first convolution's (O, B, k, k) weight for ``in_chans`` inputs, by timm's rule (``adapt_input_conv``).

    One channel: the sum over the B input channels (a grey image then gives the RGB response of its
    grey copy). More: the B channels repeated and cut to ``in_chans``, scaled by B / in_chans, so
    an image whose channels are all equal gives the same activations.
    """
    base = weight.shape[1]
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)  # (O, 1, k, k)
    reps = -(-in_chans // base)  # ceil
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (base / in_chans)  # (O, in_chans, k, k)


def _create(variant: str, cls: type, pretrained: bool = False, **kwargs) -> torch.nn.Module:
    tag = kwargs.get("pretrained_cfg")
    if isinstance(tag, str) and f"{variant}.{tag}" in TAGS:  # the zoo model's own arguments; the user's win
        kwargs = {**TAGS[f"{variant}.{tag}"][1]["model_args"], **kwargs}
    if isinstance(tag, dict) and cls.timm_cfg.get("first_conv") and not tag.get("first_conv"):
        # a config.json written before it named the first convolution: timm adapts in_chans there
        kwargs["pretrained_cfg"] = {**tag, "first_conv": cls.timm_cfg["first_conv"]}
    # conv nets give timm's features_only through forward_intermediates (timm's FeatureGetterNet)
    # (three maps: one per resolution, as both conv families reduce twice)
    feature_cfg = dict(feature_cls="getter", out_indices=(0, 1, 2)) if hasattr(cls, "forward_intermediates") else None
    model = build_model_with_cfg(cls, variant, pretrained=False, kwargs_filter=cls.timm_kwargs_filter, feature_cfg=feature_cfg, **kwargs)
    if pretrained:
        net = model.model if kwargs.get("features_only") else model  # FeatureGetterNet wraps the network
        _pretrained_weights(net, net.pretrained_cfg if hasattr(net, "pretrained_cfg") else model.pretrained_cfg, strict=not kwargs.get("features_only"))
    return model


def _cfg(**kwargs) -> dict[str, Any]:
    return {"num_classes": 10, "crop_pct": 1.0, "license": "apache-2.0", "origin_url": "https://github.com/lightning-dlstrat/lightning-dlstrat", **kwargs}


def _tag_cfg(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The class's timm defaults, with the zoo model's data config (input size, mean, std, labels) and Hub repo."""
    pretrained = config.get("pretrained_cfg", {})
    keep = {k: pretrained[k] for k in ("input_size", "mean", "std", "num_classes", "label_names", "description") if k in pretrained}
    keep = {k: tuple(v) if isinstance(v, list) and k != "label_names" else v for k, v in keep.items()}
    return _cfg(**{**CLASSIFIERS[config["architecture"]].timm_cfg, **keep, "hf_hub_id": f"lightning-dlstrat/{name}"})


def _entrypoint(name: str, cls: type):
    def entrypoint(pretrained: bool = False, **kwargs) -> torch.nn.Module:
        return _create(name, cls, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name  # timm registers an entry point under its __name__
    entrypoint.__doc__ = f"{cls.__name__} ({cls.__module__}); keyword arguments are its __init__'s."
    return entrypoint


CLASSIFIERS = architectures("classifier")
TAGS = zoo_tags()
# Each architecture's default config is the paper's network (its ``timm_cfg``: 3x32x32, no weights),
# marked default with timm's trailing ``*``: otherwise timm makes the first tag with weights the
# default, and ``create_model("darts_net")`` would build the zoo's 1-channel 8x8 digits network.
# The zoo's trained models stay tags (``darts_net.digits``).
default_cfgs = generate_default_cfgs(
    # (the tags first: timm puts a tag with weights in front of an untagged default seen before it)
    {**{tag: _tag_cfg(name, config) for tag, (name, config) in TAGS.items()}, **{f"{name}.*": _cfg(**cls.timm_cfg) for name, cls in CLASSIFIERS.items()}}
)
for _name, _cls in CLASSIFIERS.items():
    globals()[_name] = register_model(_entrypoint(_name, _cls))
