"""The ``darts`` recipe: a DARTS search in a search space (``--model.space=darts|nb201``), then its
genotype, history and pictures in the run directory.

Presets (``presets/darts.yaml``) come per space: the DARTS paper's for ``darts`` (the default),
the NAS-Bench-201 benchmark's for ``nb201`` (the yaml's ``variants.nb201`` table replaces ``all``
and ``datasets``), each with a small digits search; then per ``--model.method``, its official
recipe for that space (the yaml's ``methods`` table: order, optimisers, batch, epochs).

``--model.method=NAME`` is expanded here, once, into the settings that define the method
(:func:`lightning_dlstrat.methods.expand`), so ``config.yaml`` and ``--print-config`` show every
setting that runs, and replaying ``config.yaml`` needs no method name.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from ..core import DlstratError, launch_rank, omp_threads, shell_command, shorten
from ..methods import expand, selectable
from ..spaces import get_space
from ..trainers.darts_search import DARTSSearch
from ..viz import plot_alpha_history, plot_collapse
from .base import Recipe


def space_of(model_args: dict[str, Any]) -> str | None:
    """The preset variant: the canonical name of ``--model.space`` (None when not given: darts's presets)."""
    value = model_args.get("space")
    if value is None:
        return None
    if not isinstance(value, str):
        raise DlstratError(f"--model.space must be the name of a search space, not {shorten(value, 60)}")
    try:
        return get_space(value).name
    except ValueError as e:
        raise DlstratError(f"--model.space: {e}") from None


def method_of(given: dict[str, Any], preset: dict[str, Any]) -> str:
    """The ``--model.method`` a run uses: the user's, else the preset's, else plain DARTS."""
    method = given.get("method", (preset.get("model") or {}).get("method", "darts"))
    if not isinstance(method, str) or method not in selectable():
        raise DlstratError(f"--model.method: method must be one of {', '.join(selectable())}, not {shorten(method, 60)!r}")
    return method


def method_preset(recipe: Recipe, given: dict[str, Any], data: str, variant: str | None, preset: dict[str, Any]) -> dict[str, Any]:
    """The official recipe of the run's method in its space, over the space's preset: from darts.yaml's
    ``methods.NAME.SPACE``, the dataset's own entry (a scaled-down variant, for the embedded data)
    or else ``all`` (the paper's recipe)."""
    method = method_of(given, preset)
    table = ((recipe.presets.get("methods") or {}).get(method) or {}).get(variant or "darts") or {}
    datasets = table.get("datasets") or {}
    return dict(datasets[data]) if data in datasets else dict(table.get("all") or {})


def prepare(model_args: dict[str, Any], given: dict[str, Any], data: str) -> None:
    """Expand ``method`` into the settings that define it (those not given), so they are what config.yaml
    records; for a ``latency_target``, find (or measure once, then cache) the latency table of the
    space's evaluation network for ``data`` on this machine's CPU, eager torch, batch 1, the run's threads."""
    model_args.update(expand(method_of(model_args, {}), model_args))
    if model_args.get("latency_target") is not None and not model_args.get("latency_table"):
        space = get_space(model_args.get("space") or "darts")
        # the threads the network will run with: OMP_NUM_THREADS when set, else the search preset's (the table records them)
        threads = omp_threads() or DARTS.preset_for(data, space_of(model_args)).get("threads")
        model_args["latency_table"] = str(latency_table(space, data, threads=threads, log=lambda line: print(f"latency table: {line}", file=sys.stderr, flush=True)))
    if model_args.get("latency_target") is not None and model_args.get("latency_table") and launch_rank() == 0:
        from ..latency import LatencyTable

        table, target = LatencyTable.load(model_args["latency_table"]), model_args["latency_target"]
        fastest = table.fastest_ms()
        if isinstance(target, (int, float)) and 0 < target < fastest:  # said at once, and again in the report
            print(f"latency: {table.verdict(fastest, target)}", file=sys.stderr, flush=True)


def evaluation_network(space, data: str) -> tuple[Any, tuple[int, ...], dict[str, Any]]:
    """``(build, in_shape, arguments)`` of the network a search of ``space`` on ``data`` derives: the retrain
    recipe's (darts-net, nb201-net) with its preset for the dataset; ``build(genotype)`` makes it (eval mode)."""
    from ..config import resolve
    from .classifier import DARTS_NET, NB201_NET

    recipe = {r.name: r for r in (DARTS_NET, NB201_NET)}[space.retrain_recipe]  # a new space's retrain recipe is added here
    cfg = resolve(recipe, flags={"model": {"name": recipe.name, "genotype": str(space.sample(random.Random(0)))}, "data": {"name": data}})
    args = {k: v for k, v in cfg.model_args.items() if k != "genotype"}
    network = {k: v for k, v in args.items() if k in ("C", "layers", "N", "auxiliary", "in_shape", "num_classes", "stem_multiplier")}

    def build(genotype) -> Any:
        return recipe.module(**{**args, "genotype": str(genotype)}).export_network().eval()

    return build, tuple(cfg.model_args["in_shape"]), network


def latency_table(space, data: str, *, device: str = "cpu", runtime: str = "torch", batch: int = 1, threads: int | None = None,
                  log=lambda line: None, refresh: bool = False) -> Path:
    """The path of the latency table for a search of ``space`` on ``data``: cached or shipped when one matches
    this machine, device, runtime, batch, threads and versions exactly; otherwise measured now and cached."""
    import torch

    from ..latency import cached_path, find_table, profile, table_key

    threads = threads or torch.get_num_threads()
    build, in_shape, network = evaluation_network(space, data)
    key = table_key(space.name, network, in_shape, device, runtime, batch, threads)
    found = None if refresh else find_table(key)
    if found is not None:
        return found
    log(f"measuring the {space.name} space's operations on {device} for {data} (once; cached in {cached_path(key).parent})")
    table = profile(space, build, in_shape, network=network, device=device, runtime=runtime, batch=batch, threads=threads, log=log)
    return table.save(cached_path(key))


def check(cfg) -> None:
    """A search counts two optimiser steps a batch (architecture, weights), and Lightning checks
    ``max_steps`` between batches: an odd budget would end one step past it, so it is refused."""
    steps = cfg.trainer.get("max_steps")
    if isinstance(steps, int) and steps > 0 and steps % 2 and not cfg.model_args.get("warmup_epochs"):
        raise DlstratError(
            f"--trainer.max_steps={steps}: a DARTS search takes two optimiser steps per batch (architecture, then weights), so it "
            f"stops only at an even step count; give {steps - 1} or {steps + 1}"
        )


def after_search(module: DARTSSearch, trainer, datamodule, run_dir: Path) -> dict[str, Any]:
    """Write ``genotype.json``, the history and the pictures (through the space); say how to retrain the result."""
    space = module.space
    genotype = module.genotype()  # the same on every rank: alpha is kept identical
    if not trainer.is_global_zero:
        return {"genotype": str(genotype), "space": space.name}
    genotype.save(run_dir / "genotype.json")
    if not (run_dir / "genotype_history.jsonl").is_file():
        module.write_history(run_dir)
    space.plot_alpha(space.cell_weights(module.net), module.net.operations, run_dir / "alpha.png")
    space.plot(genotype, run_dir / "genotype.png")
    plot_alpha_history(module.history, run_dir / "alpha_history.png", title=f"{module.hparams.get('method') or 'darts'} search of the {space.name} space")
    plot_collapse(module.history, run_dir / "collapse.png")  # with --model.eigen_every >= 1 only
    result = {
        "genotype": str(genotype),
        "space": space.name,
        "report": [f"genotype: {genotype}", f"retrain with: {shell_command('dlstrat', 'fit', '--model', space.retrain_recipe, '--genotype', run_dir / 'genotype.json')}"],
    }
    if module.hparams.get("latency_table"):
        result["latency"] = latency_report(space, genotype, module.hparams.latency_table, module.hparams.get("latency_target"), run_dir)
        result["report"].append(result["latency"]["line"])
    stop = next((r["early_stop"] for r in reversed(module.history) if "early_stop" in r), None)
    if stop is not None:  # the collapse monitor's early stop (--model.eigen_stop): run.stop_reason sees only should_stop
        result["stopped"] = (
            f"R-DARTS early stop after epoch {module.history[-1]['epoch'] + 1}: the dominant eigenvalue grew {stop['ratio']:.2f}x, "
            f"alpha rolled back to epoch {stop['rolled_back_to_epoch'] + 1} (genotype_history.jsonl)"
        )
    return result


def latency_report(space, genotype, table_path: str, target: float | None, run_dir: Path) -> dict[str, Any]:
    """The derived network's latency: the table's prediction next to a measurement on the same device,
    runtime, batch and threads (and in onnxruntime when it is installed); written to ``latency.json``."""
    from ..core import atomic_write_json
    from ..latency import LatencyTable, time_in_rounds, time_network

    table = LatencyTable.load(table_path)
    key = table.key
    data = (read_yaml_config(run_dir).get("data") or {}).get("name") or "digits"
    build, in_shape, _ = evaluation_network(space, data)
    net = build(genotype)
    predicted = table.predict(space, genotype)
    # the median of 3 rounds, as the table's entries are: one slow spell of a shared machine does not decide it
    measured = {key["runtime"]: time_in_rounds({"net": (net, in_shape)}, device=key["device"], runtime=key["runtime"], batch=key["batch"], threads=key["threads"])["net"]}
    if key["runtime"] == "torch" and key["device"] == "cpu":
        try:
            measured["onnxruntime"] = time_network(net, in_shape, runtime="onnxruntime", batch=key["batch"], threads=key["threads"])
        except Exception:  # onnx, onnxscript or onnxruntime not installed: the eager measurement stands alone
            pass
    error = 100 * (predicted - measured[key["runtime"]]) / measured[key["runtime"]]
    out = {
        "predicted_ms": round(predicted, 4), "measured_ms": {k: round(v, 4) for k, v in measured.items()}, "error_pct": round(error, 2),
        "target_ms": target, "device": key["device"], "device_name": key["device_name"], "runtime": key["runtime"], "batch": key["batch"],
        # the run directory keeps its own copy of the table (below): named relative to it, never a cache's absolute path
        "threads": key["threads"], "table": "latency_table.json" if run_dir is not None else str(table_path),
    }
    if target:
        ms = measured[key["runtime"]]
        out.update(fastest_ms=round(table.fastest_ms(), 4), within_budget=predicted <= target, measured_within_budget=ms <= target,
                   verdict=table.verdict(predicted, target) + ("; measured within it" if ms <= target else f"; measured over it by {100 * (ms / target - 1):.1f} %"))
    if run_dir is not None:
        atomic_write_json(Path(run_dir) / "latency.json", out)
        table.save(Path(run_dir) / "latency_table.json")  # the table the search used travels with the run
    others = "".join(f", {k} {v:.3f} ms" for k, v in measured.items() if k != key["runtime"])
    out["line"] = (f"latency ({key['device_name']}, batch {key['batch']}, {key['threads']} thread(s)): predicted {predicted:.3f} ms, measured "
                   f"{measured[key['runtime']]:.3f} ms in {key['runtime']} (error {error:+.1f} %){others}" + (f"; {out['verdict']}" if target else ""))
    return out


def read_yaml_config(run_dir: Path) -> dict[str, Any]:
    from ..config import read_config_file

    path = Path(run_dir) / "config.yaml"
    return read_config_file(path) if path.is_file() else {}


def run_name(cfg) -> str:
    """``darts-DATA`` for a search of the DARTS space, ``darts-SPACE-DATA`` for another (``darts-nb201-digits``)."""
    space = get_space(cfg.model_args.get("space") or "darts").name
    return f"darts-{cfg.data}" if space == "darts" else f"darts-{space}-{cfg.data}"


DARTS = Recipe(
    "darts", DARTSSearch, prepare=prepare, check=check, after_fit=after_search, variant=space_of, method_preset=method_preset,
    run_name=run_name,
)
