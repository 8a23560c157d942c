"""The Hugging Face Hub format of this package's networks: save, load, verify.

A model folder (or Hub model repo) holds::

    config.json         # {"library_name": "lightning-dlstrat", "architecture": NAME, "model_args": {...}, ...}
    model.safetensors   # the state dict; the only weights format read (nothing downloaded is unpickled)
    README.md           # the model card (see lightning_dlstrat.zoo)

``config.json`` holds all that rebuilds the network: ``architecture`` names a class in
:data:`ARCHITECTURES`, ``model_args`` are its ``__init__`` arguments (a DARTS genotype as JSON lists).

:data:`ARCHITECTURES` is the one registry of deployable networks, and it fills itself. A class
joins it by declaring its name and kind where it is defined, ``class MLP(nn.Module, HubMixin,
architecture="dlstrat_mlp", kind="classifier")``; the Hub format, the timm entry points
(:mod:`lightning_dlstrat.timm_models`), the zoo and every reader of a config.json look names up
in it. A name not yet registered is found, and its module imported, on first use:

1. the package's own networks, from :data:`BUILTIN_ARCHITECTURES` (name -> ``"module:Class"``),
   imported by module string: this module sits below the networks (docs/architecture.md), so it
   names them rather than importing them by statement, and nothing heavy is imported until a
   config.json asks for it;
2. any installed package's entry points in the group :data:`ENTRY_POINT_GROUP`
   (``lightning_dlstrat.architectures``), which is how another library adds its networks::

       # its pyproject.toml; the class subclasses nn.Module and HubMixin with architecture="my_net"
       [project.entry-points."lightning_dlstrat.architectures"]
       my_net = "my_package.nets:MyNet"

This package declares its own networks there too (``pyproject.toml``, the same table as
:data:`BUILTIN_ARCHITECTURES`, tested equal). The in-package table comes first, so the built-in
names work from a source checkout or an editable install whose metadata is older than the code,
and no plugin can take a built-in name. Iterating the registry (``architectures()``) loads every
built-in network and entry point; a plugin that fails to import is skipped there with a warning,
and named in the error when its own name is asked for. So in a fresh interpreter
``from lightning_dlstrat.hub import load_model; load_model("zoo/mlp-digits")`` needs no other import.

Classifiers also carry timm's fields (``num_classes``, ``num_features``, ``pretrained_cfg``), so
``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` reads the same file
(:mod:`lightning_dlstrat.timm_models`).

Networks get ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` from :class:`HubMixin`,
huggingface_hub's ``PyTorchModelHubMixin`` with three changes: loading is strict (every tensor must
match), only ``model.safetensors`` is read, and a cached file that fails its checks (hash against
the Hub's ETag, safetensors header) is removed from the cache so a later run downloads it again
instead of trusting it. Every failure is a :class:`HubError` saying what is wrong and what to do.

References: huggingface_hub ``hub_mixin.py`` (PyTorchModelHubMixin), ``file_download.py`` (cache layout);
timm ``_hub.py`` (config.json for Hub classifiers).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import socket
import warnings
from collections.abc import Iterator, Mapping
from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub import errors as hf_errors

from .core import MAX_PARAMETERS, MAX_TEXT_BYTES, DlstratError, TooLarge, load_json, meta_build, shorten

LIBRARY_NAME = "lightning-dlstrat"
REPO_URL = "https://github.com/lightning-dlstrat/lightning-dlstrat"
DOCS_URL = f"{REPO_URL}/blob/main/docs/zoo.md"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

ENTRY_POINT_GROUP = "lightning_dlstrat.architectures"  # where installed packages declare their networks
# The package's own networks, architecture name -> "module:Class", imported by module string on
# first use (see the module docstring); pyproject.toml declares the same entry points.
BUILTIN_ARCHITECTURES: dict[str, str] = {
    "dlstrat_mlp": "lightning_dlstrat.models.mlp:MLP",
    "dense_generator": "lightning_dlstrat.models.gan:DenseGenerator",
    "dcgan_generator": "lightning_dlstrat.models.gan:DCGANGenerator",
    "mlp_generator": "lightning_dlstrat.models.gan:MLPGenerator",
    "conditional_dense_generator": "lightning_dlstrat.models.gan_conditional:ConditionalDenseGenerator",
    "conditional_dcgan_generator": "lightning_dlstrat.models.gan_conditional:ConditionalDCGANGenerator",
    "darts_net": "lightning_dlstrat.spaces.darts.network:DARTSNetwork",
    "nb201_net": "lightning_dlstrat.spaces.nb201.network:NB201Network",
}
KINDS = ("classifier", "generator")
# Networks a config.json may ask for are built on the meta device first and refused above
# MAX_PARAMETERS parameters (core.meta_build), so a downloaded config cannot make the loader
# allocate without bound.

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # ORG/NAME, as the Hub spells repo ids


class HubError(DlstratError):
    """A model could not be saved, found, downloaded or loaded; the message says why and what to do."""


class Architectures(Mapping[str, type]):
    """Architecture name -> network class; registered where each class is defined, loaded on first use.

    A name not registered yet is looked up in :data:`BUILTIN_ARCHITECTURES`, then in the installed
    entry points of :data:`ENTRY_POINT_GROUP`, and its module imported (which registers the class).
    Iterating (``list``, ``items``, ``len``) loads every built-in network and entry point first.
    """

    def __init__(self, builtin: dict[str, str], group: str):
        self._classes: dict[str, type] = {}
        self.builtin, self.group = builtin, group

    # --- registering ---
    def register(self, name: str, cls: type) -> None:
        known = self._classes.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:  # the same class again: a module reloaded
            raise TypeError(f"architecture {name!r} is already registered by {known.__module__}.{known.__qualname__}")
        self._classes[name] = cls

    def __delitem__(self, name: str) -> None:  # forget a registered class (tests, interactive sessions)
        del self._classes[name]

    # --- looking up ---
    def __getitem__(self, name: str) -> type:
        if isinstance(name, str) and name not in self._classes:
            self._load(name)
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        self.load_all()
        # the built-in networks in their table's order, then the plugins' in the order they loaded
        return iter([n for n in self.builtin if n in self._classes] + [n for n in self._classes if n not in self.builtin])

    def __len__(self) -> int:
        self.load_all()
        return len(self._classes)

    def __repr__(self) -> str:
        return f"Architectures({', '.join(self._classes)}; built-in {', '.join(self.builtin)}; entry points {self.group!r})"

    def _entry_points(self, name: str | None = None) -> list:
        from importlib.metadata import entry_points

        found = entry_points(group=self.group) if name is None else entry_points(group=self.group, name=name)
        return [ep for ep in found if ep.name not in self.builtin]  # a plugin cannot take a built-in name

    def _load(self, name: str) -> None:
        """Import the class ``name`` is declared for, if any; it registers itself (KeyError later if not)."""
        target = self.builtin.get(name)
        if target is not None:
            module_name, _, attr = target.partition(":")
            loaded = getattr(import_module(module_name), attr)
            self._check(name, loaded, f"lightning_dlstrat's {target}")
            return
        for ep in self._entry_points(name)[:1]:
            try:
                loaded = ep.load()
            except Exception as e:  # the plugin's own import error, as one message
                where = f" (package {ep.dist.name})" if getattr(ep, "dist", None) is not None else ""
                raise HubError(
                    f"the architecture {name!r} comes from the entry point {ep.value!r}{where}, which failed to import: "
                    f"{type(e).__name__}: {shorten(str(e), 300)}"
                ) from None
            self._check(name, loaded, f"the entry point {ep.value!r}")

    def _check(self, name: str, loaded: Any, where: str) -> None:
        if self._classes.get(name) is not loaded:
            raise HubError(
                f"{where} names {shorten(loaded, 80)} for the architecture {name!r}, but that is not a network registered under this name: "
                f"it must subclass nn.Module and HubMixin with architecture={name!r} in its class statement"
            )

    def load_all(self) -> None:
        """Register every built-in network and every installed entry point's (a broken plugin: a warning)."""
        for name in self.builtin:
            if name not in self._classes:
                self._load(name)
        for ep in self._entry_points():
            if ep.name in self._classes:
                continue
            try:
                self._load(ep.name)
            except HubError as e:
                warnings.warn(f"skipping a lightning-dlstrat plugin: {e}", stacklevel=3)


# architecture name in config.json -> the network class (see the module docstring). Classifier
# names double as timm model names.
ARCHITECTURES = Architectures(BUILTIN_ARCHITECTURES, ENTRY_POINT_GROUP)


def architectures(kind: str | None = None) -> dict[str, type]:
    """Every known network (of one ``kind``), by architecture name: built-in ones and installed plugins'."""
    return {name: cls for name, cls in ARCHITECTURES.items() if kind is None or cls.kind == kind}


def architecture_class(name: Any, source: str = "config.json") -> type:
    """The class of architecture ``name`` (imported on first use); an unknown name is a :class:`HubError`."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name in a hand-written config.json
        pass
    raise HubError(
        f"{source} names the architecture {shorten(name, 80)}, which this version of lightning-dlstrat does not know; "
        f"known: {', '.join(sorted(ARCHITECTURES))}. Upgrade lightning-dlstrat, install the package that provides it, or check the repo."
    )


# README.md for save_pretrained / push_to_hub outside `dlstrat push` (which writes a full card);
# push_to_hub fills in repo_id. Its snippet is run in a fresh interpreter by tests/test_zoo.py.
MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

A network saved with [lightning-dlstrat]({{ repo_url }}): `config.json` rebuilds it, `model.safetensors` holds its weights.

```python
from lightning_dlstrat.hub import load_model

net = load_model("{{ repo_id | default('ORG/NAME') }}")  # or the folder it was saved to; strict, safetensors only, eval mode
```

Docs: {{ docs_url }}
"""


class HubMixin(
    PyTorchModelHubMixin,
    model_card_template=MODEL_CARD_TEMPLATE,
    library_name=LIBRARY_NAME,
    tags=[LIBRARY_NAME],
    repo_url=REPO_URL,
    docs_url=DOCS_URL,
    license="apache-2.0",
):
    """``PyTorchModelHubMixin`` with this package's config.json and strict, safetensors-only loading.

    Put it after ``nn.Module`` in a network's bases and name the network there::

        class MLP(nn.Module, HubMixin, architecture="dlstrat_mlp", kind="classifier", tags=[...]): ...

    That registers the class in :data:`ARCHITECTURES` when its module is imported; for that import to
    happen on first use, this package lists its own networks in :data:`BUILTIN_ARCHITECTURES` (and
    pyproject.toml's entry points), and another package in its entry points. The ``__init__`` arguments of each instance
    are kept in ``init_args`` and become config.json's ``model_args``.
    """

    architecture: ClassVar[str] = ""  # the name in config.json (and timm's model name for classifiers)
    kind: ClassVar[str] = ""  # "classifier" or "generator"

    def __init_subclass__(cls, *, architecture: str | None = None, kind: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if architecture is None:
            return
        if kind not in KINDS:
            raise TypeError(f"{cls.__qualname__}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
        ARCHITECTURES.register(architecture, cls)
        cls.architecture, cls.kind = architecture, kind

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls, *args, **kwargs)
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        bound.apply_defaults()
        # set through __dict__: nn.Module.__init__ has not run yet
        instance.__dict__["init_args"] = {k: v for k, v in list(bound.arguments.items())[1:]}
        return instance

    def hub_config(self) -> dict[str, Any]:
        """What config.json holds for this network (see the module docstring)."""
        args = dict(self.init_args)
        genotype = getattr(self, "genotype", None)
        if hasattr(genotype, "to_dict"):  # the resolved cell, never a name or a path
            args["genotype"] = genotype.to_dict()
        if "num_classes" in args and hasattr(self, "num_classes"):  # reset_classifier may have changed it
            args["num_classes"] = self.num_classes
        config: dict[str, Any] = {"library_name": LIBRARY_NAME, "architecture": self.architecture, "model_args": args}
        if self.kind == "classifier":
            config.update(timm_fields(self))
        return json.loads(json.dumps(config))  # tuples -> lists, and fail here if anything is not JSON

    def save_pretrained(self, save_directory: str | Path, *, config: dict | None = None, **kwargs) -> str | None:
        return super().save_pretrained(save_directory, config=config if config is not None else self.hub_config(), **kwargs)

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict | None = None, **kwargs) -> str:
        """huggingface_hub's ``push_to_hub``; the model card's snippet loads ``repo_id``. An unreachable Hub fails at once."""
        check_hub_reachable(f"pushing {repo_id}")
        return super().push_to_hub(repo_id, model_card_kwargs={"repo_id": repo_id, **(model_card_kwargs or {})}, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str | torch.device = "cpu",
        strict: bool = True,
        **model_kwargs,
    ):
        """A network from a folder written by ``save_pretrained`` or a Hub repo id ``ORG/NAME``.

        Strict by default (huggingface_hub's mixin is not): every tensor in model.safetensors must
        match the network config.json describes; ``strict=False`` loads what matches by name.
        ``model_kwargs`` override config.json's ``model_args`` (only those that do not change the
        weights' shapes make sense, e.g. ``dropout``). The network is returned in eval mode.
        """
        return load_model(
            pretrained_model_name_or_path, expect=cls, revision=revision, cache_dir=cache_dir, force_download=force_download,
            local_files_only=local_files_only, token=token, map_location=map_location, strict=strict, **model_kwargs,
        )


def timm_fields(model: torch.nn.Module) -> dict[str, Any]:
    """timm's config.json fields for a classifier (see timm ``_hub.py::save_config_for_hf``)."""
    if hasattr(model, "in_shape"):
        input_size = list(model.in_shape)
    else:  # conv nets: channels, and the image size they were built for if they were
        input_size = [model.in_chans, *model.img_size] if getattr(model, "img_size", None) else None
    head = model.get_classifier() if hasattr(model, "get_classifier") else model.head
    pretrained_cfg = {
        "num_classes": model.num_classes,
        # every class head (a DARTS network's auxiliary one too), as timm's "classifier" may list several
        "classifier": list(getattr(model, "classifier_names", ())) or next(name for name, child in model.named_children() if child is head),
        "crop_pct": 1.0,  # small images are used whole
        "license": "apache-2.0",
    }
    if input_size:
        pretrained_cfg["input_size"] = input_size
    if getattr(model, "timm_cfg", {}).get("first_conv"):  # where timm adapts the weights to another in_chans
        pretrained_cfg["first_conv"] = model.timm_cfg["first_conv"]
    return {"num_classes": model.num_classes, "num_features": model.num_features, "pretrained_cfg": pretrained_cfg}


# --- reaching the Hub ------------------------------------------------------------------------------
REACH_TIMEOUT_S = 5.0  # one connection attempt to the endpoint before a Hub operation, at most this long


def unreachable_hub(timeout: float = REACH_TIMEOUT_S) -> str | None:
    """Why the Hub endpoint (``HF_ENDPOINT``, as huggingface_hub read it) cannot be reached, or None when it can.

    One TCP connection attempt, so an endpoint that is down fails once, at once, instead of
    through huggingface_hub's retries (5 of them, 1-8 s apart: 30 s and more). Through a proxy
    the proxy decides, so the check is left to the client (None); offline mode is the caller's.
    """
    import urllib.request
    from urllib.parse import urlsplit

    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return f"HF_ENDPOINT {constants.ENDPOINT!r} is not a URL"
    if url.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
        return None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.gaierror:
        return f"the host name {host} does not resolve"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:.0f} s"
    except OSError as e:
        return (e.strerror or str(e)).lower()
    return None


def unreachable_error(why: str, what: str, not_cached: bool = False) -> HubError:
    """The one message of an unreachable Hub."""
    local = " (`dlstrat hub serve` started the local test Hub? Then HF_ENDPOINT must be the URL it printed)" if "127.0.0.1" in constants.ENDPOINT or "localhost" in constants.ENDPOINT else ""
    return HubError(
        f"cannot reach the Hub at {constants.ENDPOINT} ({why}) for {what}" + (", and it is not in the local cache" if not_cached else "")
        + f"; check the network, or HF_ENDPOINT{local}, and retry"
    )


def check_hub_reachable(what: str) -> None:
    """Raise the one clear :class:`HubError` when the Hub cannot be reached (not in offline mode: that has its own message)."""
    if constants.is_offline_mode():
        return
    why = unreachable_hub()
    if why is not None:
        raise unreachable_error(why, what)


# --- finding files -------------------------------------------------------------------------------
def fetch(
    source: str | Path,
    filenames: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME),
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> dict[str, Path]:
    """Local paths of ``filenames`` from a folder or a Hub repo, downloaded through huggingface_hub's cache.

    Downloaded files are checked against the Hub's ETag (git blob sha1 or LFS sha256); one that
    does not match is removed from the cache and reported.
    """
    folder = Path(source)
    if folder.is_dir():
        missing = [f for f in filenames if not (folder / f).is_file()]
        if missing:
            raise HubError(f"{folder} has no {' or '.join(missing)}; it is not a model folder written by lightning-dlstrat (save_pretrained / dlstrat push)")
        return {f: folder / f for f in filenames}
    repo_id = str(source)
    if not _REPO_ID.match(repo_id):
        raise HubError(f"{repo_id!r} is neither an existing folder nor a Hub repo id of the form ORG/NAME")
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    down = None if local_files_only or constants.is_offline_mode() else unreachable_hub()
    if down is not None:  # what the cache holds still loads, without the client's retries first
        try:
            return fetch(source, filenames, revision=revision, cache_dir=cache_dir, local_files_only=True, token=token)
        except HubError:
            raise unreachable_error(down, f"{' and '.join(filenames)} from {where}", not_cached=True) from None
    out: dict[str, Path] = {}
    for filename in filenames:
        try:
            path = Path(
                hf_hub_download(
                    repo_id, filename, revision=revision, cache_dir=cache_dir, force_download=force_download,
                    local_files_only=local_files_only, token=token,
                )
            )
        except Exception as e:  # huggingface_hub's errors, turned into one message each
            raise hub_error(e, where, filename) from None
        check_cached_blob(path, where, filename)
        out[filename] = path
    return out


def hub_error(e: Exception, where: str, filename: str | None = None) -> HubError:
    """One clear message for each way a Hub request fails."""
    what = f"{filename} from {where}" if filename else where
    name = type(e).__name__
    if isinstance(e, HubError):
        return e
    # checked before EntryNotFoundError, its base class: "not cached" is not "not on the Hub"
    if isinstance(e, (hf_errors.OfflineModeIsEnabled, hf_errors.LocalEntryNotFoundError)):
        if constants.is_offline_mode():
            return HubError(f"{what} is not in the local cache ({constants.HF_HUB_CACHE}) and offline mode is on (HF_HUB_OFFLINE=1); download it once online, e.g. `dlstrat zoo pull`, or unset HF_HUB_OFFLINE")
        if "outgoing traffic has been disabled" in str(e):
            return HubError(f"{what} is not in the local cache and local_files_only=True; download it once online first")
        return HubError(f"cannot reach the Hub at {constants.ENDPOINT} for {what}, and it is not in the local cache; check the network (or HF_ENDPOINT) and retry")
    if isinstance(e, hf_errors.RevisionNotFoundError):
        return HubError(f"{where}: no such revision on the Hub (a branch, tag or commit id); see the repo's branches and tags")
    if isinstance(e, hf_errors.RepositoryNotFoundError):
        return HubError(f"{where}: no such model repo on {constants.ENDPOINT} (or it is private and no token was given: set HF_TOKEN or run `hf auth login`)")
    if isinstance(e, hf_errors.GatedRepoError):
        return HubError(f"{where} is gated: accept its terms on the Hub and log in (HF_TOKEN)")
    if isinstance(e, hf_errors.EntryNotFoundError):
        if filename == CONFIG_NAME:
            return HubError(f"{where} has no {CONFIG_NAME}: it is not a lightning-dlstrat model repo (publish one with `dlstrat push`)")
        if filename == WEIGHTS_NAME:
            return HubError(f"{where} has no {WEIGHTS_NAME}; lightning-dlstrat reads weights only as safetensors and never unpickles pytorch_model.bin")
        return HubError(f"{where} has no {filename}")
    if isinstance(e, hf_errors.HfHubHTTPError) and getattr(e, "response", None) is not None:
        status = e.response.status_code
        hint = " (log in: set HF_TOKEN or run `hf auth login`)" if status in (401, 403) else ""
        return HubError(f"the Hub answered HTTP {status} for {what}{hint}: {' '.join(str(e).split())[:300]}")
    if "Connect" in name or "Timeout" in name:  # the HTTP client's transport errors (httpx / requests)
        return HubError(f"cannot reach the Hub at {constants.ENDPOINT} for {what}; check the network (or HF_ENDPOINT) and retry")
    if isinstance(e, OSError) and "Consistency check failed" in str(e):
        return HubError(f"the download of {what} was cut short (fewer bytes than announced); nothing was cached, retry")
    return HubError(f"{what} failed: {name}: {' '.join(str(e).split())[:300]}")


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_cached_blob(path: Path, where: str, filename: str) -> None:
    """A cached file must hash to its blob's name, the ETag the Hub sent (sha256 for LFS, git sha1 else).

    huggingface_hub checks only the size; a corrupted file of the right size would otherwise be
    trusted by every later run.
    """
    blob = Path(os.path.realpath(path))
    if blob.parent.name != "blobs":  # not a symlinked cache (e.g. a local_dir download): nothing to compare
        return
    etag = blob.name
    actual = _sha256(blob) if len(etag) == 64 else _git_blob_sha1(blob) if len(etag) == 40 else etag
    if actual != etag:
        purge_cached(path)
        raise HubError(f"{filename} from {where} is corrupted (its hash does not match the Hub's ETag); removed it from the cache, retry the download")


def purge_cached(path: Path) -> None:
    """Remove a cached file: its snapshot link and the blob it points to."""
    path = Path(path)
    blob = Path(os.path.realpath(path))
    path.unlink(missing_ok=True)
    if blob != path and blob.parent.name == "blobs":
        blob.unlink(missing_ok=True)


def is_cached_path(path: Path) -> bool:
    return Path(os.path.realpath(path)).parent.name == "blobs" or "snapshots" in Path(path).parts


# --- reading -------------------------------------------------------------------------------------
def read_config(path: Path, where: str) -> dict[str, Any]:
    """config.json, checked to be one this package wrote."""
    try:
        if Path(path).stat().st_size > MAX_TEXT_BYTES:
            raise TooLarge(f"{CONFIG_NAME} in {where} is {Path(path).stat().st_size:,} bytes, more than the {MAX_TEXT_BYTES:,} a config may have")
        config = load_json(Path(path).read_bytes(), f"{CONFIG_NAME} in {where}")  # bounded: size and nesting
    except (OSError, DlstratError) as e:
        if is_cached_path(path):
            purge_cached(path)
        raise HubError(str(e) if isinstance(e, DlstratError) else f"{CONFIG_NAME} in {where} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("library_name") != LIBRARY_NAME or "architecture" not in config:
        raise HubError(
            f"{CONFIG_NAME} in {where} was not written by lightning-dlstrat (it needs \"library_name\": \"{LIBRARY_NAME}\" "
            f"and an \"architecture\"); it is not one of this package's models"
        )
    if not isinstance(config.get("model_args", {}), dict):
        raise HubError(f"{CONFIG_NAME} in {where}: model_args must be a mapping of __init__ arguments")
    return config


def build_from_config(config: dict[str, Any], where: str = CONFIG_NAME, **overrides) -> torch.nn.Module:
    """The network config.json describes, with fresh weights.

    Built on the meta device first (no memory), so a config that would allocate more than
    :data:`MAX_PARAMETERS` parameters is refused before anything is allocated.
    """
    cls = architecture_class(config["architecture"], f"{CONFIG_NAME} in {where}")
    params = inspect.signature(cls.__init__).parameters
    args = {**config.get("model_args", {}), **overrides}
    unknown = [k for k in args if k not in params]
    if unknown:
        raise HubError(f"{CONFIG_NAME} in {where}: {cls.__name__} takes no argument(s) {shorten(', '.join(unknown), 200)}")
    try:
        # counted as it is built, so a config of a million layers is refused in seconds, not built for hours
        size = sum(p.numel() for p in meta_build(lambda: cls(**args), f"the {cls.__name__} {CONFIG_NAME} in {where} describes").parameters())
        if size > MAX_PARAMETERS:
            raise HubError(f"{CONFIG_NAME} in {where} describes a {cls.__name__} of {size:,} parameters, more than this loader allows ({MAX_PARAMETERS:,}); it is not a model of this package's sizes")
        return cls(**args)
    except TooLarge as e:
        raise HubError(f"{e}, more than this loader allows; it is not a model of this package's sizes") from None
    except (TypeError, ValueError, KeyError, OverflowError, RuntimeError, MemoryError, RecursionError) as e:
        raise HubError(f"{CONFIG_NAME} in {where} does not describe a valid {cls.__name__}: {shorten(str(e), 300)}") from None


def load_weights(model: torch.nn.Module, path: Path, where: str, map_location: str | torch.device = "cpu", strict: bool = True) -> None:
    """model.safetensors into ``model``, strictly; a cached file that is not valid safetensors is purged."""
    import safetensors.torch
    from safetensors import SafetensorError

    try:
        safetensors.torch.load_model(model, str(path), strict=strict, device=str(map_location))
    except (SafetensorError, OSError) as e:
        cached = is_cached_path(path)
        if cached:
            purge_cached(path)
        raise HubError(
            f"{WEIGHTS_NAME} in {where} is not a readable safetensors file, it is truncated or corrupted ({e})"
            + ("; removed it from the cache" if cached else "")
        ) from None
    except RuntimeError as e:  # strict load_state_dict: missing/unexpected keys or shape mismatches
        raise HubError(f"the weights in {where} do not fit the network its {CONFIG_NAME} describes:\n{e}") from None


def load_model(
    source: str | Path,
    *,
    expect: type | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
    **model_kwargs,
) -> torch.nn.Module:
    """Any of this package's networks from a folder or ``ORG/NAME``, whatever its architecture.

    ``expect``: the class the caller wants (``MLP.from_pretrained`` passes ``MLP``); a repo holding
    another architecture is an error naming the right class. The architecture's module is imported
    on first use (:data:`ARCHITECTURES`), so nothing else needs importing first.
    """
    where = str(source) + (f"@{revision}" if revision else "")
    download = dict(revision=revision, cache_dir=cache_dir, force_download=force_download, local_files_only=local_files_only, token=token)
    # config first: a repo that is not ours (or another architecture) fails before any weights download
    config = read_config(fetch(source, (CONFIG_NAME,), **download)[CONFIG_NAME], where)
    cls = architecture_class(config["architecture"], f"{CONFIG_NAME} in {where}")
    if expect is not None and expect is not HubMixin and not issubclass(cls, expect):
        raise HubError(f"{where} holds a {cls.__name__} (architecture {config['architecture']!r}), not a {expect.__name__}; load it with {cls.__name__}.from_pretrained or lightning_dlstrat.hub.load_model")
    model = build_from_config(config, where, **model_kwargs)
    load_weights(model, fetch(source, (WEIGHTS_NAME,), **download)[WEIGHTS_NAME], where, map_location, strict=strict)
    return model.eval()
