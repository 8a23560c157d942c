"""From search to a published model in one run: ``dlstrat fit --model darts --retrain [--export onnx,pt2] [--push ORG/NAME]``.

The stages of one run directory, each the command a user would otherwise type by hand::

    runs/darts-digits-pipeline-20261207-201500/
        pipeline.json              # the plan: stages asked for, the search's command, the settings every stage shares
        search/                    # dlstrat fit --model darts ...                (a run directory of its own)
        retrain/seed-0/, seed-1/   # dlstrat fit --model darts-net --genotype search/genotype.json --seed S
        export/hub/                # dlstrat zoo export retrain/seed-0 --out export/hub   (+ the card's receipt)
        export/model.onnx, .pt2    # dlstrat export --zoo export/hub --out export/model.onnx
        push.json                  # hf upload ORG/NAME export/hub, when --push was asked
        summary.json               # every stage's outcome, the commands, costs, versions

Why flags of ``fit`` rather than a new command: the search is a ``dlstrat fit`` like any other
(same presets, ``--model.*`` / ``--trainer.*`` flags, ``--print-config``, DDP and precision
flags), and Lightning's own vocabulary has no "pipeline"; ``--retrain`` only says what happens
after it. The retrain stage uses the search space's retrain recipe (``darts-net``,
``nb201-net``) with its preset for the dataset: the paper's protocol on CIFAR-10, its
digits-sized variant on the embedded data. The device flags (``--accelerator``, ``--devices``,
``--strategy``, ``--precision``, ``--threads``, ``--data-dir``) apply to every stage; ``--max-epochs``,
``--model.*`` and ``--trainer.*`` to the search, ``--retrain-epochs`` to the retraining.

Resuming: ``dlstrat fit --resume RUN`` continues at the stage, and within it the epoch, where the
run stopped. A stage that finished (its ``summary.json`` exists; ``export/`` is renamed into place
only when complete) is never redone; an unfinished stage with a checkpoint resumes from it (bit
for bit the uninterrupted run, as every ``--resume``); one without starts again. Under DDP every
rank walks the same stages (the genotype is passed on in memory, the same on every rank), and only
global rank 0 writes, exports, pushes and reports.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .config import RunConfig, resolve
from .core import DlstratError, atomic_write_json, launch_rank, shell_command
from .spaces import get_space
from .run import (
    RUN_MARKER, RunInterrupted, RunLock, interruptible, device_words, discard_run_dir, find_resume, fit as run_fit, make_run_dir, point_latest,
    summary_of, versions,
)

PLAN_NAME = "pipeline.json"
PIPELINE_DIR_ENV = "DLSTRAT_PIPELINE_DIR"  # rank 0's run directory, inherited by the ranks Lightning's ddp launcher starts
FORMATS = ("onnx", "pt2", "torchscript")  # deployment formats --export takes (lightning_dlstrat.export_formats)
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}
MAX_SEEDS = 20


@dataclass
class Plan:
    """What a pipeline run does after its search (``pipeline.json``)."""

    retrain_seeds: int = 1  # retrain the derived network with seeds SEED, SEED+1, ...; the card reports mean +- std
    retrain_epochs: int | None = None  # None: the retrain recipe's preset for the dataset
    export: list[str] = field(default_factory=list)  # deployment formats written beside the Hub folder
    push: str | None = None  # ORG/NAME: push the Hub folder there at the end
    private: bool = False  # create the pushed repo private
    repo_id: str | None = None  # the repo the Hub folder is named for; default push, else lightning-dlstrat/RUN_NAME
    shared: dict[str, Any] = field(default_factory=dict)  # flags every stage takes: accelerator, devices, strategy, precision, threads, data_dir
    search_command: str = ""  # the search stage on its own (the pipeline's command without its own flags)
    command: str = ""  # the whole pipeline's command

    def check(self) -> None:
        if not 1 <= self.retrain_seeds <= MAX_SEEDS:
            raise DlstratError(f"--retrain-seeds must be in 1..{MAX_SEEDS}, not {self.retrain_seeds}")
        if self.retrain_epochs is not None and self.retrain_epochs < 1:
            raise DlstratError(f"--retrain-epochs must be at least 1, not {self.retrain_epochs}")
        unknown = [f for f in self.export if f not in FORMATS]
        if unknown:
            raise DlstratError(f"--export {','.join(unknown)}: unknown format; give a comma-separated list of {', '.join(FORMATS)}")
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        for flag, value in (("--push", self.push), ("--repo-id", self.repo_id)):
            if value is None:
                continue
            try:
                if value.count("/") != 1:
                    raise HFValidationError("not ORG/NAME")
                validate_repo_id(value)
            except HFValidationError:
                raise DlstratError(f"{flag} {value!r} is not a Hub repo id; give ORG/NAME (letters, digits, '-', '_', '.')") from None
        if self.push and self.repo_id and self.push != self.repo_id:
            raise DlstratError(f"--push {self.push} and --repo-id {self.repo_id} name two repos; --push alone names the folder after the repo it pushes to")


def root_of(path: str | Path) -> Path | None:
    """The pipeline run directory ``path`` is, or is a stage folder of (``search/``, ``retrain/seed-S/``, ``export/``); else None."""
    path = Path(os.path.realpath(path))
    if path.is_file():  # a stage's checkpoint
        path = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    for folder in (path, path.parent, path.parent.parent):
        if (folder / PLAN_NAME).is_file():
            return folder
    return None


def is_pipeline(path: str | Path) -> bool:
    """Whether ``--resume path`` continues a pipeline run (the path is one, or a stage inside one)."""
    return root_of(path) is not None


# --- starting and resuming -----------------------------------------------------------------------
def start(recipe, cfg: RunConfig, plan: Plan) -> dict[str, Any]:
    """Run the whole pipeline: ``recipe`` (darts or random-nas) searches with ``cfg``, then the plan's stages."""
    plan.check()
    space = retrain_space(recipe.name, cfg)
    if space is None:
        raise DlstratError(
            f"--retrain follows an architecture search: --model darts or --model random-nas, not {recipe.name}"
            + (" (a darts-net / nb201-net run already trains a fixed genotype: push it with `dlstrat push RUN --repo-id ORG/NAME`)" if recipe.name.endswith("-net") else "")
        )
    if recipe.run is not None and cfg.options.get("storage"):
        raise DlstratError("--retrain with a shared study (--model.storage) is not supported: retrain the study's winner by hand with the command `dlstrat study show` prints")
    rank0 = launch_rank() == 0
    name = f"{recipe.name_of_run(cfg)}-pipeline"
    if rank0:
        try:
            root = make_run_dir(cfg.out, name)
        except OSError as e:
            raise DlstratError(f"cannot create a run directory under --out {cfg.out}: {e.strerror or e}") from None
        point_latest(root, name)
        os.environ[PIPELINE_DIR_ENV] = str(root)
        atomic_write_json(root / PLAN_NAME, {"version": __version__, "model": recipe.name, "data": cfg.data, "seed": cfg.seed, "plan": asdict(plan)})
    else:
        root = Path(os.environ.get(PIPELINE_DIR_ENV) or Path(cfg.out) / f".rank{launch_rank()}-of-{name}")
    try:
        return _walk(root, plan, first=(recipe, cfg))
    except BaseException:
        if rank0 and not any(root.rglob("*.ckpt")) and not (root / "search" / "summary.json").is_file():
            discard_run_dir(root)  # nothing to resume: leave no folder behind
        raise


def resume(path: str | Path) -> dict[str, Any]:
    """Continue a pipeline run at the stage (and epoch) where it stopped."""
    root = root_of(path)
    raw = json.loads((root / PLAN_NAME).read_text())
    plan = Plan(**raw["plan"])
    plan.check()
    os.environ[PIPELINE_DIR_ENV] = str(root)
    return _walk(root, plan, first=None)


# --- the stages ----------------------------------------------------------------------------------
def _walk(root: Path, plan: Plan, first: tuple[Any, RunConfig] | None) -> dict[str, Any]:
    rank0 = launch_rank() == 0
    lock = RunLock(root).acquire() if rank0 else None
    started = time.time()
    try:
        with interruptible():
            return _stages(root, plan, first, rank0, started)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM between the Trainers (exporting, pushing)
        raise _interrupted(root, "interrupted between stages (exporting or pushing)", None) from None
    except RunInterrupted as e:  # in a stage's Trainer: resume the whole run, not the stage alone
        raise _interrupted(root, str(e).split(". ")[0], e.code) from None
    finally:
        if lock is not None:
            lock.release()


def _interrupted(root: Path, what: str, code: int | None) -> RunInterrupted:
    e = RunInterrupted(f"{what}. The partial run is in {root}; resume it at the stage where it stopped with: {shell_command('dlstrat', 'fit', '--resume', root)}")
    if code is not None:
        e.code = code
    return e


def _stages(root: Path, plan: Plan, first: tuple[Any, RunConfig] | None, rank0: bool, started: float) -> dict[str, Any]:
    from .recipes import get_recipe

    # search
    search_dir = root / "search"
    if first is not None:
        recipe, cfg = first
        search = _run_stage(search_dir, recipe, lambda: cfg, plan.search_command)
    else:
        search = _run_stage(search_dir, None, None, plan.search_command)
    space_name = search.get("space") or "darts"
    space = get_space(space_name)
    retrain_recipe = get_recipe(space.retrain_recipe)
    genotype = search["genotype"]  # the same text on every rank (the search keeps alpha identical)
    data, seed = search["data"], int(search["seed"])

    # retrain, one stage per seed
    retrains = []
    for k in range(plan.retrain_seeds):
        s = seed + k
        folder = root / "retrain" / f"seed-{s}"

        def config(s=s, folder=folder) -> RunConfig:
            flags = {"model": {"name": retrain_recipe.name, "genotype": genotype}, "data": {"name": data}, "seed": s, **plan.shared}
            if plan.retrain_epochs is not None:
                flags["max_epochs"] = plan.retrain_epochs
            cfg = resolve(retrain_recipe, flags=flags)
            cfg.made_from = {"genotype": "search/genotype.json", "search_run": str(search_dir.resolve())}
            return cfg

        retrains.append(_run_stage(folder, retrain_recipe, config, retrain_command(retrain_recipe.name, root, data, s, plan)))

    summary: dict[str, Any] = {}
    if rank0:
        first_retrain = root / "retrain" / f"seed-{seed}"
        exported = _export_stage(root, plan, search_dir, first_retrain, search, retrains)
        pushed = _push_stage(root, plan) if plan.push else None
        summary = _summary(root, plan, search, retrains, exported, pushed, started)
        atomic_write_json(root / "summary.json", summary)
    return summary


def _run_stage(folder: Path, recipe, config, command: str) -> dict[str, Any]:
    """One ``dlstrat fit`` stage in ``folder``: its summary if it finished, else resumed from its checkpoint, else run afresh."""
    from .recipes import get_recipe

    if (folder / "summary.json").is_file():  # finished: never redone
        return summary_of(folder)
    rank0 = launch_rank() == 0
    if (folder / RUN_MARKER).is_file():
        try:
            found = find_resume(folder, None, get_recipe)
        except DlstratError:
            found = None  # started, but stopped before its first checkpoint: start it again
        if found is not None:
            stage_recipe = get_recipe(found.model)
            cfg = resolve(stage_recipe, found.config, {})
            cfg.command = command
            return run_fit(stage_recipe, cfg, resume=found)
    if config is None:  # resuming a search that stopped before its first checkpoint: again, from the config.yaml it wrote
        if not (folder / "config.yaml").is_file():
            raise DlstratError(f"{folder.parent}: the search stage never started, so there is nothing to resume; run the pipeline command again")
        from .config import read_config_file

        saved = read_config_file(folder / "config.yaml")
        config = lambda: resolve(get_recipe(saved["model"]["name"]), saved, {})  # noqa: E731
        recipe = get_recipe(saved["model"]["name"])
    cfg = config()
    cfg.command = command
    if rank0:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / RUN_MARKER).write_text(f"a stage of a lightning-dlstrat {__version__} pipeline run: `dlstrat fit --resume {folder.parent}` continues it\n")
    cfg.run_dir = str(folder)
    return run_fit(recipe, cfg)


def retrain_command(recipe: str, root: Path, data: str, seed: int, plan: Plan) -> str:
    """The retrain stage on its own, as a user would type it."""
    words: list[Any] = ["dlstrat", "fit", "--model", recipe, "--genotype", root / "search" / "genotype.json", "--data", data, "--seed", seed]
    for key, value in plan.shared.items():
        words += [f"--{key.replace('_', '-')}", value]
    if plan.retrain_epochs is not None:
        words += ["--max-epochs", plan.retrain_epochs]
    return shell_command(*words)


def retrain_space(model: str, cfg: RunConfig) -> str | None:
    """The search space a search recipe's run searches (None for a recipe that does not search)."""
    if model == "darts":
        return str(cfg.model_args.get("space") or "darts")
    if model == "random-nas":
        return str(cfg.options.get("space") or "darts")
    return None


def _export_stage(root: Path, plan: Plan, search_dir: Path, retrain_dir: Path, search: dict, retrains: list[dict]) -> dict[str, Any]:
    """Write ``export/``: the deployment formats, the measured costs and the Hub folder with its receipt card;
    built in ``export.partial/`` and renamed into place when complete, so a finished export is never redone."""
    from .cost import count_flops, count_params, measure_latency
    from .export import export_run, run_checkpoint
    from .export_formats import export as export_format
    from .inference import load

    final = root / "export"
    if (final / "export.json").is_file():
        return json.loads((final / "export.json").read_text())
    work = root / "export.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    checkpoint = run_checkpoint(retrain_dir)
    loaded = load(checkpoint=checkpoint)  # the network the Hub folder publishes, the same weights
    files, checks = {"hub": "export/hub"}, {}
    for fmt in plan.export:
        out = work / f"model{SUFFIX[fmt]}"
        result = export_format(loaded, fmt, out)  # checked against the eager network, or refused
        files[fmt] = f"export/{out.name}"
        checks[fmt] = {"max_abs_diff": result.max_abs_diff, "note": result.note}
    latency = [measure_latency(loaded.net, loaded.input_size)]
    if "onnx" in plan.export and _has("onnxruntime"):
        latency.append(measure_latency(work / "model.onnx", loaded.input_size, runtime="onnxruntime"))
    cost = {"params": count_params(loaded.net), "flops": count_flops(loaded.net, loaded.input_size), "latency": latency}
    cost["macs"] = cost["flops"] // 2
    repo_id = plan.push or plan.repo_id or f"lightning-dlstrat/{root.name}"
    commands = [shell_command("dlstrat", "zoo", "export", retrain_dir, "--out", final / "hub", "--repo-id", repo_id)]
    commands += [shell_command("dlstrat", "export", "--checkpoint", checkpoint, "--out", final / f"model{SUFFIX[fmt]}") for fmt in plan.export]
    if plan.push:
        commands.append(shell_command("hf", "upload", plan.push, final / "hub"))
    receipt = {**build_receipt(root, plan, search_dir, search, retrains), "cost": cost, "export_commands": commands, "repo_id": repo_id}
    export_run(retrain_dir, work / "hub", repo_id=repo_id, summary_line=receipt["summary_line"], receipt=receipt, anchor=root)
    info = {"files": files, "checks": checks, "cost": cost, "repo_id": repo_id, "commands": commands}
    atomic_write_json(work / "export.json", info)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(work, final)  # the stage is done exactly when export/ exists
    return info


def _has(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def _push_stage(root: Path, plan: Plan) -> dict[str, Any]:
    """Push ``export/hub`` to ``plan.push`` (once: ``push.json`` records the commit)."""
    from .zoo import upload

    done = root / "push.json"
    if done.is_file():
        return json.loads(done.read_text())
    url = upload(root / "export" / "hub", plan.push, private=plan.private, message=f"dlstrat fit --retrain: {root.name}")
    info = {"repo_id": plan.push, "commit": url, "command": shell_command("hf", "upload", plan.push, root / "export" / "hub")}
    atomic_write_json(done, info)
    return info


# --- the receipt ---------------------------------------------------------------------------------
def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def seed_table(retrains: list[dict]) -> dict[str, Any]:
    """Each retrain seed's test metrics, and their mean and sample standard deviation."""
    rows = [{"seed": r["seed"], **{k: v for k, v in (r.get("test_metrics") or {}).items()}, "params": r.get("params")} for r in retrains]
    keys = sorted({k for r in retrains for k in (r.get("test_metrics") or {})})
    return {"per_seed": rows, **{k: mean_std([float(r["test_metrics"][k]) for r in retrains if k in (r.get("test_metrics") or {})]) for k in keys}}


def split_sizes(cfg_dict: dict[str, Any]) -> dict[str, int]:
    """How many examples each split of a stage's dataset held, its datamodule built again from the stage's config.yaml."""
    from .config import build
    from .data import DATAMODULES

    data = dict(cfg_dict.get("data") or {})
    try:
        dm = build(DATAMODULES[data.pop("name")], data, "dataset")
        dm.setup("fit")
    except Exception:  # the data may be gone (a moved run): the receipt then says less
        return {}
    sets = {"train": dm.train_set, "architecture": dm.arch_set, "val": dm.val_set, "test": dm.test_set}
    return {k: len(v) for k, v in sets.items() if v is not None}


def build_receipt(root: Path, plan: Plan, search_dir: Path, search: dict, retrains: list[dict]) -> dict[str, Any]:
    """What the card records so the model can be made again: settings, seeds, commands, data, costs, versions."""
    from .config import read_config_file

    search_cfg = read_config_file(search_dir / "config.yaml")
    retrain_cfg = read_config_file(root / "retrain" / f"seed-{search['seed']}" / "config.yaml")
    model_args = search_cfg.get("model", {})
    method = model_args.get("method") or ("random search" if search["model"] == "random-nas" else "darts")
    epochs = search.get("fit_metrics", {}).get("epoch")
    history = search_dir / "genotype_history.jsonl"
    searched_epochs = len(history.read_text().splitlines()) if history.is_file() else None
    seeds = seed_table(retrains)
    acc = seeds.get("test/acc")
    retrain_epochs = retrain_cfg.get("trainer", {}).get("max_epochs")
    sizes = ", ".join(f"{k}={v}" for k, v in (retrain_cfg.get("model") or {}).items() if k in ("C", "layers", "N"))
    space = {"darts": "DARTS", "nb201": "NAS-Bench-201"}.get(search.get("space", "darts"), search.get("space"))
    return {
        "summary_line": f"{space} cell searched by {method} on {search['data']} (seed {search['seed']}), retrained ({sizes})"
                        + (f" with {len(retrains)} seeds" if len(retrains) > 1 else ""),
        "method": method,
        "method_settings": {k: v for k, v in model_args.items() if k != "name"},
        "search_options": search_cfg.get("options") or {},
        "search_trainer": search_cfg.get("trainer") or {},
        "data": search["data"],
        "data_settings": {k: v for k, v in (search_cfg.get("data") or {}).items() if k != "name"},
        "splits": {"search": split_sizes(search_cfg), "retrain": split_sizes(retrain_cfg)},
        "seeds": {"search": search["seed"], "retrain": [r["seed"] for r in retrains]},
        "search_cost": {"wall_time_s": search.get("wall_time_s"), "device": device_words(search_cfg.get("trainer") or {}),
                        "threads": (search.get("threads") or {}).get("count"), "epochs": searched_epochs or epochs,
                        "trials": search.get("trials")},
        "retrain": {"recipe": retrain_cfg.get("model", {}).get("name"), "epochs": retrain_epochs,
                    "wall_time_s": [r.get("wall_time_s") for r in retrains]},
        "test": seeds,
        "test_acc": acc,
        "commands": {"pipeline": plan.command, "search": search.get("command") or plan.search_command,
                     "retrain": [r.get("command") for r in retrains]},
        "versions": versions(),
        "search_dir": str(search_dir),
        "retrain_dirs": [r.get("run_dir") for r in retrains],
    }


def _summary(root: Path, plan: Plan, search: dict, retrains: list[dict], exported: dict, pushed: dict | None, started: float) -> dict[str, Any]:
    seeds = seed_table(retrains)
    acc = seeds.get("test/acc")
    shown = f"{100 * acc['mean']:.2f} +- {100 * acc['std']:.2f} % over {acc['n']} seeds" if acc and acc["n"] > 1 else (
        f"{100 * acc['mean']:.2f} %" if acc else "-")
    latency = exported["cost"]["latency"][0]
    report = [
        f"search: {search.get('genotype')}",
        f"retrain: test accuracy {shown} ({', '.join(r['run_dir'] for r in retrains)})",
        f"export: {root / 'export' / 'hub'} ({exported['cost']['params']:,} parameters, {exported['cost']['flops'] / 1e6:.2f} MFLOPs, "
        f"{latency['median_ms']:.2f} ms a batch of {latency['batch']} on {latency['device']} ({latency['runtime']}, {latency['threads']} thread(s)))"
        + (f"; {', '.join(v for k, v in exported['files'].items() if k != 'hub')}" if len(exported["files"]) > 1 else ""),
        *([f"pushed: {pushed['repo_id']} ({pushed['commit']})"] if pushed else []),
        f"the stages on their own: {search.get('command') or plan.search_command}; then {retrains[0].get('command')}",
    ]
    return {
        "model": search["model"], "data": search["data"], "seed": search["seed"], "command": plan.command,
        "run_dir": str(root), "stages": {
            "search": {"run_dir": search["run_dir"], "genotype": search.get("genotype"), "test_metrics": search.get("test_metrics"),
                       "wall_time_s": search.get("wall_time_s"), "command": search.get("command")},
            "retrain": [{"seed": r["seed"], "run_dir": r["run_dir"], "test_metrics": r.get("test_metrics"), "params": r.get("params"),
                         "wall_time_s": r.get("wall_time_s"), "command": r.get("command")} for r in retrains],
            "export": exported, "push": pushed,
        },
        "test_metrics": {k: v["mean"] for k, v in seeds.items() if isinstance(v, dict) and "mean" in v},
        "test_over_seeds": seeds,
        "genotype": search.get("genotype"),
        "wall_time_s": round(time.time() - started, 2),
        "versions": versions(),
        "pictures": sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")),
        "report": report,
    }
