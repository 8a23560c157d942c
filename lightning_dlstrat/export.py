"""Exporting runs and published cells as Hub model folders, and writing their model cards.

:func:`export_run` turns a finished run directory into the folder its Hub repo holds: the
network the run's LightningModule deploys (``export_network()``), ``config.json``,
``model.safetensors``, a model card with the measured metrics, the pictures, and the run's
``summary.json`` and ``config.yaml`` (paths made relative, so nothing of the machine it ran on
is published). What the run was made from is read from its record (``summary.json``'s
``made_from``: the recipe, the genotype's source and the search run), never guessed.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .core import atomic_write_bytes, atomic_write_json, shell_command
from .data import DATAMODULES
from .hub import ARCHITECTURES, CONFIG_NAME, DOCS_URL, LIBRARY_NAME, REPO_URL, HubError
from .spaces.darts.network import DARTSNetwork
from .spaces.darts.genotype import GENOTYPES
from .recipes import get_recipe
from .recipes.gan import draw_samples
from .spaces import SPACES, get_space
from .run import summary_of
from .spaces.darts.viz import plot_genotype
from .zoo import HUB_ORG, SUMMARY_NAME, upload

SEARCH_SUMMARY_NAME = "search_summary.json"  # darts-net models: the architecture search that found the genotype


def portable(value: Any, run_dir: Path) -> Any:
    """``value`` with absolute paths rewritten relative to the runs folder (``runs/NAME/...``), recursively."""
    base = Path(run_dir).resolve().parent

    def fix(text: str) -> str:
        def one(m: re.Match) -> str:
            path = Path(m.group(0))
            try:
                return str(Path("runs") / path.resolve().relative_to(base))
            except ValueError:
                return path.name
        return re.sub(r"(?<![\w.:/])/[^\s'\",]+", one, text)  # absolute paths, not URLs or relative paths

    if isinstance(value, str):
        return fix(value)
    if isinstance(value, dict):
        return {k: portable(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, run_dir) for v in value]
    return value


def run_checkpoint(run_dir: str | Path, summary: dict[str, Any] | None = None) -> Path:
    """The checkpoint a finished run exports: its best (its last when it monitored nothing), found in the run directory if the run was moved."""
    run_dir = Path(run_dir)
    summary = summary if summary is not None else summary_of(run_dir)
    ckpt = Path(summary.get("best_checkpoint") or summary.get("last_checkpoint") or run_dir / "checkpoints" / "best.ckpt")
    if not ckpt.is_file():  # the run directory was moved: its checkpoints moved with it
        ckpt = run_dir / "checkpoints" / ckpt.name
    if not ckpt.is_file():
        raise HubError(f"{run_dir} has no checkpoint to export ({ckpt} is missing)")
    return ckpt


RECEIPT_NAME = "receipt.json"  # pipeline runs: everything the card's reproducibility receipt says, as data


def export_run(
    run_dir: str | Path, out_dir: str | Path, *, repo_id: str | None = None, summary_line: str | None = None,
    receipt: dict[str, Any] | None = None, anchor: str | Path | None = None,
) -> Path:
    """A run's best network as a Hub model folder: weights, config.json, card, pictures, summary.

    ``repo_id`` names the card and goes into its loading snippet (default: ``lightning-dlstrat/``
    and the folder's name); ``summary_line`` is config.json's one-line ``summary``. ``receipt``
    (a ``dlstrat fit --retrain`` run, :mod:`lightning_dlstrat.pipeline`): what the card adds as
    its reproducibility receipt (every stage's command, the method's settings, seeds and their
    spread, data splits, search cost, parameters, FLOPs, measured latency) and its pictures, written
    as ``receipt.json`` too. ``anchor``: the folder whose parent published paths are made relative
    to (default ``run_dir``; a pipeline's run directory for its stages).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    anchor = Path(anchor) if anchor is not None else run_dir
    summary = summary_of(run_dir)
    ckpt = run_checkpoint(run_dir, summary)
    recipe = get_recipe(summary["model"]).for_variant(summary.get("space"))  # random-nas in nb201 trains nb201-net's module
    module = recipe.module.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    net = module.export_network()
    if net is None:
        hint = ""
        if (run_dir / "genotype.json").is_file():  # an architecture search: its product is the genotype
            retrain = get_space(summary.get("space") or "darts").retrain_recipe
            hint = f"; retrain its genotype with `{shell_command('dlstrat', 'fit', '--model', retrain, '--genotype', run_dir / 'genotype.json')}` and push that run"
        raise HubError(f"the {summary['model']} recipe has no network in the Hub format to export{hint}")
    net.eval()
    repo_id = repo_id or f"{HUB_ORG}/{out_dir.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    config = net.hub_config()
    config["summary"] = summary_line or f"{type(net).__name__} trained on {summary['data']} by the {summary['model']} recipe"
    if net.kind == "classifier":
        config["pretrained_cfg"].update(data_config(summary["data"], normalization_of(ckpt)))
        in_shape = module.hparams.get("in_shape")
        if in_shape and "input_size" not in config["pretrained_cfg"]:  # a network that does not know its input size (nb201_net)
            config["pretrained_cfg"]["input_size"] = list(in_shape)
    net.save_pretrained(out_dir, config=config)
    public = portable(summary, anchor)
    atomic_write_json(out_dir / SUMMARY_NAME, public)
    if (run_dir / "config.yaml").is_file():  # replayable: `dlstrat fit --config config.yaml`
        atomic_write_bytes(out_dir / "config.yaml", portable((run_dir / "config.yaml").read_text(), anchor).encode())
    search_dir = (summary.get("made_from") or {}).get("search_run")
    search_dir = Path(search_dir) if search_dir and (Path(search_dir) / "summary.json").is_file() else None
    search = portable(summary_of(search_dir), anchor if receipt is not None else search_dir) if search_dir is not None else None
    if search is not None:  # the searched genotype's own record: the search command, seed, metrics
        atomic_write_json(out_dir / SEARCH_SUMMARY_NAME, search)
    pictures = draw_pictures(net, summary, search_dir, out_dir)
    if receipt is not None:
        receipt = portable(receipt, anchor)
        pictures.update(receipt_pictures(run_dir, search_dir, out_dir))
        atomic_write_json(out_dir / RECEIPT_NAME, receipt)
    monitor, mode = getattr(module, "monitor", None), getattr(module, "mode", "max")
    selection = f"checkpoint with the {'lowest' if mode == 'min' else 'highest'} {monitor}" if monitor else "last checkpoint"
    cost = (receipt or {}).get("cost") or (network_cost(net, config) if net.kind == "classifier" else None)
    run_card(repo_id.split("/")[-1], config, public, pictures, repo_id, selection, search, receipt, cost).write(out_dir)
    return out_dir


def network_cost(net: torch.nn.Module, config: dict[str, Any]) -> dict[str, Any] | None:
    """Parameters, FLOPs and latency (CPU, eager torch, batch 1, this process's threads) of a classifier, measured now."""
    from .cost import count_flops, count_params, measure_latency

    size = tuple(config.get("pretrained_cfg", {}).get("input_size") or ())
    if not size:
        return None
    cost = {"params": count_params(net), "flops": count_flops(net, size), "latency": [measure_latency(net, size)]}
    cost["macs"] = cost["flops"] // 2
    return cost


def receipt_pictures(run_dir: Path, search_dir: Path | None, out_dir: Path) -> dict[str, str]:
    """The receipt's pictures, copied beside the card: the search's alpha history and the retraining's learning curves."""
    copied: dict[str, str] = {}
    for source, name, caption in (
        (search_dir / "alpha_history.png" if search_dir else None, "alpha_history.png", "architecture weights during the search: each operation's softmax(alpha), averaged over edges, per epoch"),
        (run_dir / "learning_curves.png", "retrain_curves.png", "the retraining's loss and accuracy per epoch (train, val; test after the last epoch)"),
    ):
        if source is not None and source.is_file():
            shutil.copyfile(source, out_dir / name)
            copied[name] = caption
    return copied


def normalization_of(ckpt: Path) -> str:
    """The ``--data.normalization`` a checkpoint's datamodule was built with ("standard" if it saved none)."""
    saved = torch.load(ckpt, map_location="cpu", weights_only=True).get("datamodule_hyper_parameters") or {}
    return str(saved.get("normalization", "standard"))


def data_config(data: str, normalization: str = "standard") -> dict[str, Any]:
    """Preprocessing for timm's pretrained_cfg: ``(x - mean) / std`` of pixels in [0, 1], as the run's
    datamodule normalised them (``--data.normalization``: its statistics for "standard", 0.5 / 0.5
    for "tanh", which is 2x - 1, and 0 / 1 for "none")."""
    cls = DATAMODULES.get(data)
    out: dict[str, Any] = {"description": f"trained on {data} with lightning-dlstrat"}
    if cls is not None and cls.mean:
        channels = len(cls.mean)
        mean, std = {"tanh": ([0.5] * channels, [0.5] * channels), "none": ([0.0] * channels, [1.0] * channels)}.get(
            normalization, (list(cls.mean), list(cls.std)))
        out.update(mean=mean, std=std)
    if cls is not None and cls.num_classes:
        out["label_names"] = [str(i) for i in range(cls.num_classes)]
    return out


def draw_pictures(net: torch.nn.Module, summary: dict, search_dir: Path | None, out_dir: Path) -> dict[str, str]:
    """Pictures for the card: cell diagram (+ the search's alpha heatmap) for DARTS networks,
    samples of the exported network for generators."""
    pictures: dict[str, str] = {}
    if net.kind == "generator":  # draw from the exported weights themselves
        points = len(net.out_shape) == 1
        # the metrics' sample count for points; an 8x8 grid for images (conditional: 8 per class row)
        n = 2500 if points else 8 * net.num_classes if getattr(net, "num_classes", 0) else 64
        what = draw_samples(net, n, out_dir / "samples.png", seed=0, data=summary["data"])
        pictures["samples.png"] = f"{what} of this generator (latent noise from torch.Generator().manual_seed(0))" + (", true modes as red crosses" if points else "")
    space = space_of_architecture(net.architecture)
    if space is not None:  # a cell of a search space: its picture, and the search's alpha if there was one
        space.plot(net.genotype, out_dir / "cell.png")
        pictures["cell.png"] = "normal and reduction cells of the genotype" if space.name == "darts" else f"the cell {net.genotype}"
        if search_dir is not None and (search_dir / "alpha.png").is_file():
            shutil.copyfile(search_dir / "alpha.png", out_dir / "alpha.png")
            pictures["alpha.png"] = "architecture weights (softmax of alpha) at the end of the search"
    return pictures


def space_of_architecture(architecture: str):
    """The search space whose evaluation network ``architecture`` is (darts_net, nb201_net), else None."""
    return next((cls() for cls in SPACES.values() if cls.architecture == architecture), None)


# --- published DARTS cells ------------------------------------------------------------------------
# The papers' CIFAR-10 results for their cells, quoted (not measured here) on the genotype cards.
PUBLISHED = {
    "DARTS_V2": {
        "paper": "Liu, Simonyan, Yang. DARTS: Differentiable Architecture Search. ICLR 2019",
        "url": "https://arxiv.org/abs/1806.09055", "code": "https://github.com/quark0/darts",
        "error": 2.76, "error_std": 0.09, "params": "3.3M", "search": "4 GPU-days (second-order DARTS, 4 search runs, GTX 1080Ti)",
    },
    "PC_DARTS": {
        "paper": "Xu, Xie, Zhang, Chen, Qi, Tian, Xiong. PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture Search. ICLR 2020",
        "url": "https://arxiv.org/abs/1907.05737", "code": "https://github.com/yuhuixu1993/PC-DARTS",
        "error": 2.57, "error_std": 0.07, "params": "3.6M", "search": "0.1 GPU-days (GTX 1080Ti)",
    },
}


def export_genotype(name: str, out_dir: str | Path, *, repo_id: str | None = None) -> Path:
    """A genotype card for a published cell: config.json of the paper's CIFAR-10 network, card, cell picture.

    No weights: ``zoo.load`` returns the :class:`Genotype`, and
    ``timm.create_model("local-dir:FOLDER")`` builds the untrained paper-sized network to train.
    """
    if name not in PUBLISHED:
        raise HubError(f"no published results recorded for {name!r}; genotype cards exist for: {', '.join(PUBLISHED)}")
    paper, genotype = PUBLISHED[name], GENOTYPES[name]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the paper's evaluation network: 36 channels, 20 cells, auxiliary head, 32x32 RGB
    net = DARTSNetwork(genotype, C=36, layers=20, num_classes=10, in_chans=3, img_size=32, auxiliary=True)
    params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("auxiliary_head."))
    config = net.hub_config()
    config["pretrained_cfg"].update(mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616], description=f"{name} cell, untrained (genotype card)")
    config["summary"] = f"the published {name} CIFAR-10 cell (genotype card, no weights)"
    atomic_write_bytes(out_dir / CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    plot_genotype(genotype, out_dir / "cell.png")
    result = EvalResult(
        task_type="image-classification", task_name="Image classification", dataset_type="cifar10", dataset_name="CIFAR-10",
        dataset_split="test", metric_type="error", metric_name="test error (%)", metric_value=paper["error"],
        source_name=paper["paper"], source_url=paper["url"],
    )
    about = (
        f"The {name} cell, as published: {paper['paper']} ({paper['url']}, code {paper['code']}). "
        "A genotype card: the architecture of the paper's CIFAR-10 network, without weights.\n\n"
        f"Published CIFAR-10 test error {paper['error']} ± {paper['error_std']} % with {paper['params']} parameters "
        f"after 600 epochs (as reported in the paper, not measured by this package); search cost {paper['search']}. "
        f"This package's `DARTSNetwork` built from config.json (C=36, 20 cells) has {params:,} parameters without its auxiliary head.\n\n"
        f"```\n{genotype}\n```"
    )
    ref = repo_id or f"{HUB_ORG}/{out_dir.name}"
    Card(
        out_dir.name, config, about=about, datasets=["cifar10"], results=[result],
        commands=[f"dlstrat zoo export-genotype {name} --out {out_dir.name}"],
        pictures={"cell.png": f"normal and reduction cells of {name}"}, tags=("image-classification", "darts", "nas", "genotype"),
        use=[
            "from lightning_dlstrat import zoo", "", f'genotype = zoo.load("{out_dir.name}")  # the Genotype', "",
            "import timm, lightning_dlstrat", f'net = timm.create_model("hf-hub:{ref}")  # the paper-sized network, untrained', "",
            f"# train it: dlstrat fit --model darts-net --genotype {name} --data cifar10",
        ],
    ).write(out_dir)
    return out_dir


# --- model cards ----------------------------------------------------------------------------------
def pipeline_tag(arch: str) -> str | None:
    """The Hub task of a network: classifiers classify images; generators of images generate them (2-D points have none)."""
    cls = ARCHITECTURES[arch]
    if cls.kind == "classifier":
        return "image-classification"
    if arch == "mlp_generator" or arch.startswith("conditional_"):
        return None  # the Hub has no task for 2-D points, nor for class-conditional generation
    return "unconditional-image-generation"


METRIC_NAMES = {"acc": ("accuracy", "accuracy"), "loss": ("loss", "cross-entropy loss")}


@dataclass
class Card:
    """What a model card says; :meth:`write` renders README.md (YAML metadata + markdown)."""

    name: str
    config: dict[str, Any]
    about: str = ""
    datasets: list[str] | None = None
    results: list[EvalResult] | None = None  # model-index entries
    table: list[tuple[str, str, str]] | None = None  # (metric, value, how it was measured)
    commands: list[str] | None = None  # the exact commands that made it
    versions: dict[str, str] | None = None
    pictures: dict[str, str] | None = None  # file -> caption
    use: list[str] | None = None  # Python lines of the usage snippet
    tags: tuple[str, ...] = ()
    receipt: list[tuple[str, str]] | None = None  # (item, value): what a pipeline run records to make the model again

    def write(self, out_dir: Path) -> None:
        arch = self.config["architecture"]
        results = self.results or []
        mixin = ARCHITECTURES[arch]._hub_mixin_info  # what the class declares (HubMixin's tags=, paper_url=)
        paper = mixin.paper_url
        arxiv = re.search(r"arxiv\.org/abs/([\w.]+)", paper or "")
        data = ModelCardData(
            library_name=LIBRARY_NAME,
            license="apache-2.0",
            # the Hub links a model to its paper through an "arxiv:ID" tag
            tags=sorted({LIBRARY_NAME, "pytorch", arch, *self.tags, *(mixin.model_card_data.get("tags") or ()), *([f"arxiv:{arxiv[1]}"] if arxiv else [])}),
            datasets=self.datasets,
            metrics=sorted({r.metric_type for r in results}) or None,
            pipeline_tag=pipeline_tag(arch),
            model_name=self.name,
            eval_results=results or None,
        )
        cls_name = ARCHITECTURES[arch].__name__
        lines = [f"# {self.name}", ""]
        if self.about:
            lines += [self.about, ""]
        lines += [f"Network: `{cls_name}` (architecture `{arch}`) from [lightning-dlstrat]({REPO_URL}), a plain `torch.nn.Module`; its arguments in `{CONFIG_NAME}`.", ""]
        if paper:
            lines += [f"Paper: {paper}", ""]
        if self.table:
            lines += ["## Results", "", "| metric | value | how it was measured |", "|---|---|---|"]
            lines += [f"| {m} | {v} | {how} |" for m, v, how in self.table] + [""]
        if self.commands:
            lines += ["## How it was made", "", "```bash", *self.commands, "```", ""]
            if self.receipt:
                lines += ["### Reproducibility receipt", "", f"Everything below is also in [`{RECEIPT_NAME}`]({RECEIPT_NAME}).", "",
                          "| item | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in self.receipt], ""]
            if self.versions:
                lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.versions.items())) + f". Training summary: [`{SUMMARY_NAME}`]({SUMMARY_NAME}).", ""]
        if self.pictures:
            lines += ["## Pictures", ""]
            for file, caption in self.pictures.items():
                lines += [f"![{caption}]({file})", "", f"*{caption}*", ""]
        if self.use:
            lines += ["## Use", "", "```python", *self.use, "```", ""]
        lines += [f"Loading, fine-tuning and publishing: {DOCS_URL}", ""]
        atomic_write_bytes(out_dir / "README.md", str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))).encode())


def run_card(
    name: str, config: dict, summary: dict, pictures: dict[str, str], repo_id: str, selection: str, search: dict | None = None,
    receipt: dict | None = None, cost: dict | None = None,
) -> Card:
    """The card of an exported run: its measured metrics, commands (the search's too) and versions; with a
    pipeline's ``receipt``, the reproducibility receipt (:func:`receipt_rows`)."""
    arch = config["architecture"]
    module_name, cls_name = ARCHITECTURES[arch].__module__, ARCHITECTURES[arch].__name__
    data, seed = summary["data"], summary.get("seed")
    results, table = [], []
    commands = [summary.get("command") or f"dlstrat fit --model {summary['model']}", f"dlstrat push RUN_DIR --repo-id {repo_id}  # RUN_DIR: the folder the fit printed"]
    about = ""
    if search is not None:
        commands.insert(0, f"{search['command']}  # the architecture search ({SEARCH_SUMMARY_NAME}); it prints the run folder holding genotype.json")
        where = "" if search.get("space", "darts") == "darts" else f" in the {get_space(search['space']).name} space"
        about = f"A genotype found by DARTS architecture search{where} on {search['data']} (seed {search.get('seed')}), then retrained from scratch:\n\n```\n{net_genotype(config)}\n```"
    card = Card(name, config, about=about, datasets=[data], commands=commands, versions=summary.get("versions"), pictures=pictures)
    load = [f"from {module_name} import {cls_name}", "", f'net = {cls_name}.from_pretrained("{repo_id}")  # strict, safetensors only, eval mode']
    if ARCHITECTURES[arch].kind == "classifier":
        for key, value in sorted((summary.get("test_metrics") or {}).items()):
            split, _, metric = key.partition("/")
            metric_type, metric_name = METRIC_NAMES.get(metric, (metric, metric))
            results.append(EvalResult(
                task_type="image-classification", task_name="Image classification", dataset_type=data, dataset_name=data,
                dataset_split=split, metric_type=metric_type, metric_name=f"{split} {metric_name}", metric_value=round(float(value), 4),
                source_name="lightning-dlstrat", source_url=REPO_URL,
            ))
            table.append((f"{split} {metric_name}", f"{value:.4f}", f"{data} {split} split, held out from training and model selection; {selection}; seed {seed}"))
        card.tags = ("safetensors", "image-classification", "timm")
        card.use = load + ["logits = net(images)  # (B, num_classes); images normalised with config.json's pretrained_cfg mean/std", "",
                           "import timm, lightning_dlstrat  # registers the architecture with timm", f'net = timm.create_model("hf-hub:{repo_id}", pretrained=True)']
    else:
        gan = summary.get("gan_metrics") or {}
        results, table = gan_results(gan, data, summary)
        conditional = bool(config["model_args"].get("num_classes"))
        card.tags = ("safetensors", "gan", "2d-points" if gan.get("kind") == "modes" else "conditional-image-generation" if conditional else "unconditional-image-generation")
        card.use = ["import torch", *load, "", "z = torch.randn(64, net.latent_dim)"] + (
            ["y = torch.full((64,), 7)  # the class to draw", "samples = net(z, y)  # (64, *out_shape): images in [-1, 1]"]
            if conditional else ["samples = net(z)  # (64, *out_shape): images in [-1, 1], points in the data's coordinates"]
        )
    card.results, card.table = results, table
    if cost:
        add_cost(card, cost, data)
    if receipt is not None:
        add_receipt(card, receipt, data)
    return card


def add_cost(card: Card, cost: dict[str, Any], data: str) -> None:
    """Parameters, FLOPs and measured latency (with its device and runtime) in the card's table, latency in its metrics too."""
    card.table.append(("parameters", f"{cost['params']:,}", "of the published network, without an auxiliary head"))
    card.table.append(("FLOPs", f"{cost['flops'] / 1e6:.2f} M ({cost['macs'] / 1e6:.2f} M multiply-adds)", "one input, torch.utils.flop_counter"))
    for lat in cost.get("latency", []):
        where = f"batch {lat['batch']}, {lat['device']} ({lat['device_name']}), {lat['runtime']}, {lat['threads']} thread(s)"
        card.table.append((f"latency, {lat['runtime']}", f"{lat['median_ms']:.3f} ms",
                           f"median of {lat['repeats']} forward passes after warm-up, {where}; interquartile {lat['iqr_ms'][0]:.3f}-{lat['iqr_ms'][1]:.3f} ms"))
        card.results.append(EvalResult(
            task_type="image-classification", task_name="Image classification", dataset_type=data, dataset_name=data, dataset_split="test",
            metric_type="latency", metric_name=f"latency (ms), {where}", metric_value=round(lat["median_ms"], 4),
            source_name="lightning-dlstrat", source_url=REPO_URL,
        ))


def add_receipt(card: Card, receipt: dict[str, Any], data: str) -> None:
    """Turn a pipeline run's card into its reproducibility receipt: the one command and each stage's,
    the mean +- std over the retrain seeds, parameters, FLOPs and measured latency, and the settings table."""
    commands = receipt["commands"]
    card.commands = [
        commands["pipeline"], "",
        "# or stage by stage (each stage's run directory holds its config.yaml and summary.json):",
        commands["search"], *[c for c in commands["retrain"] if c], *receipt.get("export_commands", []),
    ]
    test = receipt.get("test") or {}
    seeds = receipt["seeds"]["retrain"]
    for key, stats in sorted((k, v) for k, v in test.items() if isinstance(v, dict) and "mean" in v):
        if stats["n"] < 2:
            continue
        split, _, metric = key.partition("/")
        metric_type, metric_name = METRIC_NAMES.get(metric, (metric, metric))
        card.results.append(EvalResult(
            task_type="image-classification", task_name="Image classification", dataset_type=data, dataset_name=data,
            dataset_split=split, metric_type=metric_type, metric_name=f"{split} {metric_name}, mean of {stats['n']} seeds",
            metric_value=round(stats["mean"], 4), source_name="lightning-dlstrat", source_url=REPO_URL,
        ))
        per_seed = ", ".join(f"{r[key]:.4f}" for r in test["per_seed"] if key in r)
        card.table.append((f"{split} {metric_name}, {stats['n']} seeds", f"{stats['mean']:.4f} ± {stats['std']:.4f}",
                           f"mean ± sample std over retrain seeds {', '.join(map(str, seeds))} ({per_seed}); the weights published are seed {seeds[0]}'s"))
    card.receipt = receipt_rows(receipt)


def receipt_rows(receipt: dict[str, Any]) -> list[tuple[str, str]]:
    """The card's "Reproducibility receipt" table: (item, value)."""
    compact = lambda value: json.dumps(value, sort_keys=True, default=str)  # noqa: E731
    cost, splits = receipt["search_cost"], receipt.get("splits") or {}
    rows = [
        ("search method", f"`{receipt['method']}`"),
        ("method settings (search module; unset ones left out)", f"`{compact({k: v for k, v in receipt['method_settings'].items() if v is not None})}`"),
        ("search trainer settings", f"`{compact(receipt['search_trainer'])}`"),
        ("data set", f"`{receipt['data']}`, settings `{compact(receipt['data_settings'])}`"),
    ]
    for stage, sizes in splits.items():
        if sizes:
            rows.append((f"splits ({stage})", ", ".join(f"{k} {v:,}" for k, v in sizes.items())))
    rows += [
        ("seeds", f"search {receipt['seeds']['search']}; retrain {', '.join(map(str, receipt['seeds']['retrain']))}"),
        ("search cost", f"{cost['wall_time_s']:.0f} s wall on {cost['device']}, {cost['threads']} thread(s)"
         + (f", {cost['epochs']} epoch(s)" if cost.get("epochs") else "") + (f", {cost['trials']} trials" if cost.get("trials") else "")),
        ("retraining", f"`{receipt['retrain']['recipe']}`, {receipt['retrain']['epochs']} epoch(s), "
         + ", ".join(f"{t:.0f} s" for t in receipt["retrain"]["wall_time_s"] if t is not None) + " wall"),
        ("versions", ", ".join(f"{k} {v}" for k, v in sorted(receipt["versions"].items()))),
    ]
    return rows


def net_genotype(config: dict) -> str:
    """The genotype text of a config.json, in its space's form."""
    space, value = space_of_architecture(config["architecture"]), config["model_args"]["genotype"]
    return str(space.from_dict(value) if isinstance(value, dict) else space.parse(value))  # never a file: configs are downloaded


def gan_results(gan: dict, data: str, summary: dict) -> tuple[list[EvalResult], list[tuple[str, str, str]]]:
    """model-index entries and table rows for the metrics ``trainers/gan.py`` measures (see ``metrics.py``)."""
    n, steps = gan.get("num_samples"), summary.get("generator_steps")
    who = f"{n} samples of the EMA generator after {steps} generator steps, seed {summary.get('seed')}"
    if gan.get("kind") == "modes":
        rows = [
            ("modes captured", f"{gan['modes_captured']} / {gan['num_modes']}", f"{who}; a mode is captured when a high-quality sample is nearest to it (VEEGAN/PacGAN)", "modes-captured", gan["modes_captured"]),
            ("high-quality samples (%)", f"{gan['high_quality_pct']:.1f}", f"{who}; within 3 standard deviations of the nearest mode", "high-quality-samples", round(gan["high_quality_pct"], 2)),
        ]
        if gan.get("reverse_kl") is not None:
            rows.append(("reverse KL", f"{gan['reverse_kl']:.4f}", f"{who}; KL(q || uniform) of the mode histogram of high-quality samples", "reverse-kl", round(gan["reverse_kl"], 4)))
        task, split = ("unconditional-generation", "Unconditional generation (2-D points)"), None  # against the mixture itself
    elif gan.get("kind") == "classifier":
        feats = f"{who} vs {gan['num_real']} training images, in the features of the bundled digits classifier (torchmetrics)"
        rows = [
            ("Frechet distance (digits classifier)", f"{gan['classifier_fd']:.2f}", f"{feats}; real test vs training images: {gan['classifier_fd_real_baseline']:.2f}", "frechet-distance", round(gan["classifier_fd"], 3)),
            ("kernel distance (digits classifier)", f"{gan['classifier_kid']:.4f} ± {gan['classifier_kid_std']:.4f}", f"{feats}; {gan['kid_subsets']} subsets of {gan['kid_subset_size']}; real test vs training images: {gan['classifier_kid_real_baseline']:.4f}", "kernel-distance", round(gan["classifier_kid"], 5)),
            ("classifier score (digits classifier)", f"{gan['classifier_is']:.2f} ± {gan['classifier_is_std']:.2f}", f"{who}; the Inception score's formula on the classifier's 10 logits, {gan['is_splits']} splits", "classifier-score", round(gan["classifier_is"], 3)),
            ("confidently labelled (%)", f"{gan['confident_pct']:.1f}", f"{who}; top class probability >= 0.9 under the digits classifier", "confident-samples", round(gan["confident_pct"], 2)),
        ]
        if "label_agreement_pct" in gan:
            rows.append(("labelled as the class asked for (%)", f"{gan['label_agreement_pct']:.1f}", f"{who}, every class equally often; per class {min(gan['label_agreement_per_class_pct']):.1f}-{max(gan['label_agreement_per_class_pct']):.1f}%", "label-agreement", round(gan["label_agreement_pct"], 2)))
        task, split = _generation_task(gan), "train"
    elif gan.get("kind") == "inception":
        rows = [
            ("FID", f"{gan['fid']:.2f}", f"{who} vs {gan['num_real']} training images, torchmetrics Inception FID", "fid", round(gan["fid"], 3)),
            ("KID", f"{gan['kid']:.4f} ± {gan['kid_std']:.4f}", f"{who}, torchmetrics Inception KID, {gan['kid_subsets']} subsets of {gan['kid_subset_size']}", "kid", round(gan["kid"], 5)),
            ("IS", f"{gan['is']:.2f} ± {gan['is_std']:.2f}", f"{who}, torchmetrics Inception score, {gan['is_splits']} splits", "inception-score", round(gan["is"], 3)),
        ]
        task, split = _generation_task(gan), "train"
    else:
        return [], []
    results = [
        EvalResult(task_type=task[0], task_name=task[1], dataset_type=data, dataset_name=data, dataset_split=split,
                   metric_type=metric_type, metric_name=metric, metric_value=value, source_name="lightning-dlstrat", source_url=REPO_URL)
        for metric, _, _, metric_type, value in rows
    ]
    return results, [(metric, shown, how) for metric, shown, how, _, _ in rows]


def _generation_task(gan: dict) -> tuple[str, str]:
    if "label_agreement_pct" in gan:
        return "conditional-image-generation", "Class-conditional image generation"
    return "unconditional-image-generation", "Unconditional image generation"


def push(run_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None, token: str | bool | None = None) -> str:
    """Export a run (:func:`export_run`) and push it to ``repo_id``; returns the commit URL."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_run(run_dir, Path(tmp) / repo_id.split("/")[-1], repo_id=repo_id)
        return upload(folder, repo_id, private=private, revision=revision, token=token, message=f"dlstrat push {Path(run_dir).name}")
