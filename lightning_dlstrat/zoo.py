"""The model zoo: trained networks of this package's own recipes, in Hub model-repo layout.

The zoo's one home is the top-level ``zoo/`` folder of the repository, one folder per model,
laid out as its Hub repo: ``config.json`` (with a one-line ``summary``), ``model.safetensors``
(none for genotype cards), ``README.md`` (the model card) with its pictures, and
``training_summary.json`` / ``config.yaml`` of the run that made it. The wheel ships the same
folder as ``lightning_dlstrat.zoo_models``, so :func:`load` works offline right after install.
The index is the folders themselves: adding a model is adding its folder.

    from lightning_dlstrat import zoo
    net = zoo.load("mlp-digits")                       # the packaged copy, offline
    net = zoo.load("mlp-digits", source="hub")         # the published repo, through the HF cache
    net = zoo.load_model("ORG/NAME")                   # any network of this package, any repo

Exporting runs and writing cards: :mod:`lightning_dlstrat.export`. The CLI: ``dlstrat zoo
list|pull|publish|export|export-genotype`` and ``dlstrat push``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, snapshot_download

from . import hub
from .hub import (
    CONFIG_NAME, LIBRARY_NAME, WEIGHTS_NAME, HubError, check_cached_blob, check_hub_reachable, fetch, hub_error, read_config,
    unreachable_error, unreachable_hub,
)
from .spaces.darts.genotype import Genotype

SUMMARY_NAME = "training_summary.json"
HUB_ORG = "lightning-dlstrat"


def zoo_root() -> Path:
    """The folder of zoo models: the installed ``lightning_dlstrat.zoo_models``, or a checkout's ``zoo/``."""
    try:
        return Path(str(resources.files("lightning_dlstrat.zoo_models")))
    except ModuleNotFoundError:  # run from a checkout without installing (python cli.py)
        return Path(__file__).resolve().parents[1] / "zoo"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    folder: Path
    repo: str | None = None  # the Hub repo, when it is not the zoo's own (a folder a run exported)

    @property
    def repo_id(self) -> str:
        return self.repo or f"{HUB_ORG}/{self.name}"

    @property
    def kind(self) -> str:
        """"weights": a trained network; "genotype": a published DARTS cell, no weights."""
        return "weights" if (self.folder / WEIGHTS_NAME).is_file() else "genotype"

    @property
    def config(self) -> dict[str, Any]:
        return read_config(self.folder / CONFIG_NAME, str(self.folder))

    @property
    def summary(self) -> str:
        return self.config.get("summary", "")

    def training_data(self) -> str:
        """The dataset the model was trained on, from its training summary ("" if none)."""
        path = self.folder / SUMMARY_NAME
        return str(json.loads(path.read_text()).get("data", "")) if path.is_file() else ""

    def headline(self) -> str:
        """The key measured metric, for `dlstrat zoo list` ("" if none)."""
        path = self.folder / SUMMARY_NAME
        if not path.is_file():
            return ""
        summary = json.loads(path.read_text())
        tested, gan = summary.get("test_metrics") or {}, summary.get("gan_metrics") or {}
        receipt = self.folder / "receipt.json"  # a search-to-model run retrained with several seeds: their mean and spread
        over = (json.loads(receipt.read_text()).get("test") or {}).get("test/acc") if receipt.is_file() else None
        if over and over.get("n", 1) > 1:
            return f"test accuracy {over['mean']:.4f} ± {over['std']:.4f} over {over['n']} seeds"
        if "test/acc" in tested:
            return f"test accuracy {tested['test/acc']:.4f}"
        if gan.get("kind") == "modes":
            return f"{gan['modes_captured']}/{gan['num_modes']} modes, {gan['high_quality_pct']:.1f}% high-quality samples"
        if "label_agreement_pct" in gan:
            return f"{gan['label_agreement_pct']:.1f}% drawn as the class asked for, classifier FD {gan['classifier_fd']:.2f}"
        if gan.get("kind") == "classifier":
            return f"classifier FD {gan['classifier_fd']:.2f} (real vs real {gan['classifier_fd_real_baseline']:.2f})"
        return ""


def folder_entry(folder: str | Path) -> ZooEntry:
    """A model folder outside the zoo (an exported run: ``RUN/export/hub``) as a zoo entry, to list it alike."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise HubError(f"{folder} is not a model folder (no {CONFIG_NAME} in it); give a folder `dlstrat zoo export` or `dlstrat fit --retrain` wrote")
    folder = folder.resolve()
    name = folder.parent.parent.name if folder.name == "hub" and folder.parent.name == "export" else folder.name  # RUN/export/hub: the run's name
    receipt = folder / "receipt.json"
    repo = json.loads(receipt.read_text()).get("repo_id") if receipt.is_file() else None
    return ZooEntry(name, folder, repo)


@cache
def entries() -> dict[str, ZooEntry]:
    """Every zoo model, by name: the folders holding a config.json."""
    root = zoo_root()
    return {p.parent.name: ZooEntry(p.parent.name, p.parent) for p in sorted(root.glob(f"*/{CONFIG_NAME}"))}


def get_entry(name: str) -> ZooEntry:
    if name not in entries():
        raise HubError(f"unknown zoo model {name[:80]!r}; the zoo has: {', '.join(entries())} (see `dlstrat zoo list`)")
    return entries()[name]


def local_folder(name: str) -> Path:
    """The packaged copy of a zoo model."""
    return get_entry(name).folder


# --- using the zoo --------------------------------------------------------------------------------
def load_model(source: str | Path, **kwargs):
    """Any of this package's networks from a folder or ``ORG/NAME`` (see :func:`lightning_dlstrat.hub.load_model`)."""
    return hub.load_model(source, **kwargs)


def load(name: str, *, source: str = "auto", revision: str | None = None, **kwargs) -> Any:
    """A zoo model: the network (eval mode), or for a genotype card its :class:`Genotype`.

    ``source``: "local" (the packaged copy), "hub" (its repo, via huggingface_hub's cache; honours
    HF_HUB_OFFLINE) or "auto" (local unless a ``revision`` is asked for). ``kwargs`` go to
    :func:`lightning_dlstrat.hub.load_model` (``cache_dir``, ``token``, ``map_location``, ...).
    """
    if source not in ("auto", "local", "hub"):
        raise HubError(f"source must be 'auto', 'local' or 'hub', not {source!r}")
    entry = get_entry(name)
    use_hub = source == "hub" or (source == "auto" and revision is not None)
    where: str | Path = entry.repo_id if use_hub else entry.folder
    if entry.kind == "genotype":
        download = {k: v for k, v in kwargs.items() if k in ("cache_dir", "token", "local_files_only", "force_download")}
        config = read_config(fetch(where, (CONFIG_NAME,), revision=revision if use_hub else None, **download)[CONFIG_NAME], str(where))
        try:
            return Genotype.coerce(config["model_args"]["genotype"])
        except (KeyError, ValueError) as e:
            raise HubError(f"{CONFIG_NAME} in {where} holds no valid genotype: {str(e)[:300]}") from None
    return load_model(where, revision=revision if use_hub else None, **kwargs)


def pull(name_or_repo: str, *, revision: str | None = None, cache_dir: str | Path | None = None, token: str | bool | None = None) -> Path:
    """Download a zoo model's repo (or any ``ORG/NAME``) into huggingface_hub's cache; returns the snapshot folder.

    Every file is checked against the Hub's hash (its blob name), as ``from_pretrained`` does, and
    one that fails is removed from the cache. A repo with only pickled weights is refused.
    """
    repo_id = get_entry(name_or_repo).repo_id if "/" not in name_or_repo else name_or_repo
    where = repo_id + (f"@{revision}" if revision else "")
    down = None if constants.is_offline_mode() else unreachable_hub()
    try:
        # an unreachable Hub: the cached snapshot, if any, at once (not after the client's retries)
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token, local_files_only=down is not None))
    except Exception as e:
        if down is not None:
            raise unreachable_error(down, where, not_cached=True) from None
        raise hub_error(e, where) from None
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        check_cached_blob(file, where, str(file.relative_to(path)))
    if not (path / CONFIG_NAME).is_file():
        raise HubError(f"{where} has no {CONFIG_NAME}: it is not a lightning-dlstrat model repo")
    read_config(path / CONFIG_NAME, where)
    pickles = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    if pickles and not (path / WEIGHTS_NAME).is_file():
        raise HubError(f"{where} holds only pickled weights ({', '.join(sorted(pickles))}), which lightning-dlstrat never loads; it needs {WEIGHTS_NAME}")
    return path


def upload(folder: Path, repo_id: str, *, private: bool = False, revision: str | None = None, token: str | bool | None = None, message: str | None = None) -> str:
    """Create ``repo_id`` if needed (and the branch ``revision``) and commit ``folder`` to it; returns the commit URL."""
    check_hub_reachable(f"pushing to {repo_id}")
    api = HfApi(token=token, library_name=LIBRARY_NAME)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=folder, revision=revision,
            commit_message=message or f"Upload {folder.name} with lightning-dlstrat",
        )
    except Exception as e:
        raise hub_error(e, repo_id + (f"@{revision}" if revision else "")) from None
    return str(info)


def publish(name: str, *, repo_id: str | None = None, private: bool = False, revision: str | None = None, token: str | bool | None = None) -> str:
    """Push the packaged copy of a zoo model to its Hub repo (or ``repo_id``)."""
    entry = get_entry(name)
    return upload(entry.folder, repo_id or entry.repo_id, private=private, revision=revision, token=token, message=f"Publish zoo model {name}")
