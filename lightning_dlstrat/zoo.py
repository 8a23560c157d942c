"""The model zoo: trained networks of this package's own recipes, in Hub model-repo layout.

Each zoo model is a folder ``lightning_dlstrat/zoo_models/NAME/`` (shipped in the wheel, so
:func:`load` works offline right after install) holding what its Hub repo holds: ``config.json``,
``model.safetensors`` (none for genotype cards), ``README.md`` (the model card) with its pictures,
and ``training_summary.json`` (the run's summary.json: metrics, seed, versions and the exact
command that produced it). :data:`ZOO` names the Hub repo each is published under.

    from lightning_dlstrat import zoo
    net = zoo.load("mlp-digits")                       # the packaged copy, offline
    net = zoo.load("mlp-digits", source="hub")         # the published repo, through the HF cache
    zoo.export_run("runs/mlp-digits-...", "out/")      # a run's best network + card, Hub layout
    zoo.push("runs/mlp-digits-...", "ORG/NAME")        # ... and pushed to the Hub

The CLI: ``dlstrat push RUN_DIR --repo-id ORG/NAME``, ``dlstrat zoo list|pull|publish``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, snapshot_download

from .hub import (
    CLASSIFIERS,
    CONFIG_NAME,
    LIBRARY_NAME,
    REPO_URL,
    WEIGHTS_NAME,
    HubError,
    fetch,
    HubMixin,
    hub_error,
    load_model,
    read_config,
)
from .run import atomic_write_bytes, atomic_write_json

SUMMARY_NAME = "training_summary.json"
HUB_ORG = "lightning-dlstrat"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    summary: str  # one line for `dlstrat zoo list`
    kind: str = "weights"  # "weights": a trained network; "genotype": a published DARTS cell, no weights

    @property
    def repo_id(self) -> str:
        return f"{HUB_ORG}/{self.name}"


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("mlp-digits", "MLP 64-128-10 on the 8x8 digits"),
    )
}


def get_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise HubError(f"unknown zoo model {name!r}; the zoo has: {', '.join(ZOO)} (see `dlstrat zoo list`)")
    return ZOO[name]


def local_folder(name: str) -> Path:
    """The packaged copy of a zoo model (inside the installed package, found with importlib.resources)."""
    entry = get_entry(name)
    folder = Path(str(resources.files("lightning_dlstrat") / "zoo_models" / entry.name))
    if not (folder / CONFIG_NAME).is_file():
        raise HubError(f"zoo model {name!r} is not packaged in this installation ({folder}); load it from the Hub with source='hub'")
    return folder


# --- using the zoo --------------------------------------------------------------------------------
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
    where: str | Path = entry.repo_id if use_hub else local_folder(name)
    if entry.kind == "genotype":
        from .models.genotype import Genotype

        files = fetch(where, (CONFIG_NAME,), revision=revision if use_hub else None, **{k: v for k, v in kwargs.items() if k in ("cache_dir", "token", "local_files_only", "force_download")})
        config = read_config(files[CONFIG_NAME], str(where))
        return Genotype.from_dict(config["model_args"]["genotype"])
    return load_model(where, revision=revision if use_hub else None, **kwargs)


def pull(name_or_repo: str, *, revision: str | None = None, cache_dir: str | Path | None = None, token: str | bool | None = None) -> Path:
    """Download a zoo model's repo (or any ``ORG/NAME``) into huggingface_hub's cache; returns the snapshot folder."""
    repo_id = get_entry(name_or_repo).repo_id if "/" not in name_or_repo else name_or_repo
    where = repo_id + (f"@{revision}" if revision else "")
    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token))
    except Exception as e:
        raise hub_error(e, where) from None
    if not (path / CONFIG_NAME).is_file():
        raise HubError(f"{where} has no {CONFIG_NAME}: it is not a lightning-dlstrat model repo")
    read_config(path / CONFIG_NAME, where)
    return path


def upload(folder: Path, repo_id: str, *, private: bool = False, revision: str | None = None, token: str | bool | None = None, message: str | None = None) -> str:
    """Create ``repo_id`` if needed (and the branch ``revision``) and commit ``folder`` to it; returns the commit URL."""
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
    return upload(local_folder(name), repo_id or entry.repo_id, private=private, revision=revision, token=token, message=f"Publish zoo model {name}")


# --- exporting runs -------------------------------------------------------------------------------
def read_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise HubError(f"{run_dir} is not a finished run directory (no summary.json); pass the folder `dlstrat fit` printed")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HubError(f"{path} is not valid JSON ({e})") from None


def exportable_network(module: torch.nn.Module) -> HubMixin | None:
    """The network a LightningModule deploys: an EMA copy if it keeps one, else its Hub-format network."""
    found = [(name, child) for name, child in module.named_children() if isinstance(child, HubMixin)]
    found.sort(key=lambda item: "ema" not in item[0])
    return found[0][1] if found else None


def export_run(run_dir: str | Path, out_dir: str | Path, *, repo_id: str | None = None) -> Path:
    """A run's best network as a Hub model folder: weights, config.json, card, pictures, summary.

    ``repo_id`` only goes into the card's loading snippet.
    """
    from .registry import get_recipe

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    summary = read_summary(run_dir)
    ckpt = summary.get("best_checkpoint") or summary.get("last_checkpoint")
    ckpt = Path(ckpt) if ckpt else run_dir / "checkpoints" / "best.ckpt"
    if not ckpt.is_absolute() and not ckpt.is_file():
        ckpt = run_dir / "checkpoints" / ckpt.name
    if not ckpt.is_file():
        raise HubError(f"{run_dir} has no checkpoint to export ({ckpt} is missing)")
    try:
        recipe = get_recipe(summary["model"])
    except KeyError as e:
        raise HubError(str(e.args[0])) from None
    module = recipe.module_class.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    net = exportable_network(module)
    if net is None:
        raise HubError(f"the {summary['model']} recipe has no network in the Hub format to export (its LightningModule holds no HubMixin network)")
    net.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    config = net.hub_config()
    if config["architecture"] in CLASSIFIERS:
        config["pretrained_cfg"].update(data_config(summary["data"]))
    net.save_pretrained(out_dir, config=config)
    atomic_write_json(out_dir / SUMMARY_NAME, summary)
    pictures = draw_pictures(net, module, summary, run_dir, out_dir)
    monitor, mode = getattr(module, "monitor", None), getattr(module, "mode", "max")
    selection = f"checkpoint with the {'lowest' if mode == 'min' else 'highest'} {monitor}" if monitor else "last checkpoint"
    write_card(out_dir, config, summary, pictures, repo_id=repo_id, selection=selection)
    return out_dir


def data_config(data: str) -> dict[str, Any]:
    """Preprocessing for timm's pretrained_cfg: the datamodule's normalisation statistics."""
    from .data import DATAMODULES

    cls = DATAMODULES.get(data)
    out: dict[str, Any] = {"description": f"trained on {data} with lightning-dlstrat"}
    if cls is not None and cls.mean:
        out.update(mean=list(cls.mean), std=list(cls.std))
    if cls is not None and cls.num_classes:
        out["label_names"] = [str(i) for i in range(cls.num_classes)]
    return out


def draw_pictures(net: torch.nn.Module, module, summary: dict, run_dir: Path, out_dir: Path) -> dict[str, str]:
    """Pictures for the card: cell diagram (+ alpha heatmap of the search) for DARTS networks."""
    pictures: dict[str, str] = {}
    genotype = getattr(net, "genotype", None)
    if genotype is not None and hasattr(genotype, "to_dict"):
        from .viz import plot_genotype

        plot_genotype(genotype, out_dir / "cell.png")
        pictures["cell.png"] = "normal and reduction cells of the genotype"
        search_alpha = _search_run_file(summary, "alpha.png")
        if search_alpha is not None:
            shutil.copyfile(search_alpha, out_dir / "alpha.png")
            pictures["alpha.png"] = "architecture weights (softmax of alpha) at the end of the search"
    return pictures


def _search_run_file(summary: dict, name: str) -> Path | None:
    """A file next to the genotype.json a darts-net run was trained from (the search run's folder)."""
    words = summary.get("command", "").split()
    for flag, value in zip(words, words[1:]):
        if flag == "--genotype" and value.endswith(".json"):
            candidate = Path(value).parent / name
            return candidate if candidate.is_file() else None
    return None


# --- model cards ----------------------------------------------------------------------------------
METRIC_NAMES = {"acc": ("accuracy", "accuracy"), "loss": ("loss", "cross-entropy loss")}
TASKS = {"classifier": ("image-classification", "Image classification")}


def eval_results(config: dict, summary: dict) -> list[EvalResult]:
    task_type, task_name = TASKS["classifier"]
    out = []
    for key, value in sorted((summary.get("test_metrics") or {}).items()):
        split, _, metric = key.partition("/")
        metric_type, metric_name = METRIC_NAMES.get(metric, (metric, metric))
        out.append(
            EvalResult(
                task_type=task_type, task_name=task_name, dataset_type=summary["data"], dataset_name=summary["data"],
                dataset_split=split, metric_type=metric_type, metric_name=f"{split} {metric_name}", metric_value=round(float(value), 4),
                source_name="lightning-dlstrat", source_url=REPO_URL,
            )
        )
    return out


def write_card(
    out_dir: Path, config: dict, summary: dict, pictures: dict[str, str], *,
    repo_id: str | None = None, title: str | None = None, about: str = "", selection: str = "last checkpoint",
) -> None:
    """README.md: YAML metadata (library, tags, datasets, metrics in model-index), the command, pictures, usage."""
    from .hub import ARCHITECTURES

    arch = config["architecture"]
    module_name, cls_name = ARCHITECTURES[arch].split(":")
    name = title or out_dir.name
    results = eval_results(config, summary) if config.get("num_classes") else []
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        license="apache-2.0",
        tags=sorted({LIBRARY_NAME, "pytorch", "safetensors", arch, *(["image-classification", "timm"] if arch in CLASSIFIERS else [])}),
        datasets=[summary["data"]] if summary.get("data") else None,
        metrics=sorted({r.metric_type for r in results}) or None,
        pipeline_tag="image-classification" if arch in CLASSIFIERS else None,
        model_name=name,
        eval_results=results or None,
    )
    ref = repo_id or f"{HUB_ORG}/{name}"
    lines = [f"# {name}", ""]
    if about:
        lines += [about, ""]
    lines += [f"Network: `{cls_name}` (architecture `{arch}`) from [lightning-dlstrat]({REPO_URL}), a plain `torch.nn.Module`; weights in `{WEIGHTS_NAME}`, its arguments in `{CONFIG_NAME}`.", ""]
    if results:
        seed = summary.get("seed")
        lines += ["## Results", "", "| metric | value | how it was measured |", "|---|---|---|"]
        for r in results:
            lines.append(f"| {r.metric_name} | {r.metric_value:.4f} | {summary['data']} {r.dataset_split} split (held out from training and model selection), {selection}, seed {seed} |")
        lines.append("")
    if summary.get("command"):
        lines += ["## How it was made", "", "```bash", summary["command"], f"dlstrat push RUN_DIR --repo-id {ref}  # RUN_DIR: the folder the fit printed", "```", ""]
        versions = summary.get("versions") or {}
        if versions:
            lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + f". Training summary: [`{SUMMARY_NAME}`]({SUMMARY_NAME}).", ""]
    if pictures:
        lines += ["## Pictures", ""]
        for file, caption in pictures.items():
            lines += [f"![{caption}]({file})", f"*{caption}*", ""]
    lines += ["## Use", "", "```python", f"from {module_name} import {cls_name}", "", f'net = {cls_name}.from_pretrained("{ref}")  # strict, safetensors only, eval mode']
    if arch in CLASSIFIERS:
        lines += ["", "import timm, lightning_dlstrat  # registers the architecture with timm", f'net = timm.create_model("hf-hub:{ref}", pretrained=True)']
    lines += ["```", "", f"Fine-tune and publish: {REPO_URL}/blob/main/docs/zoo.md", ""]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    atomic_write_bytes(out_dir / "README.md", str(card).encode())


def push(run_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None, token: str | bool | None = None) -> str:
    """Export a run (:func:`export_run`) and push it to ``repo_id``; returns the commit URL."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_run(run_dir, Path(tmp) / repo_id.split("/")[-1], repo_id=repo_id)
        return upload(folder, repo_id, private=private, revision=revision, token=token, message=f"dlstrat push {Path(run_dir).name}")
