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

from pathlib import Path
from typing import Any

from ..core import DlstratError, shell_command, shorten
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


def prepare(model_args: dict[str, Any], given: dict[str, Any]) -> None:
    """Expand ``method`` into the settings that define it (those not given), so they are what config.yaml records."""
    model_args.update(expand(method_of(model_args, {}), model_args))


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
    stop = next((r["early_stop"] for r in reversed(module.history) if "early_stop" in r), None)
    if stop is not None:  # the collapse monitor's early stop (--model.eigen_stop): run.stop_reason sees only should_stop
        result["stopped"] = (
            f"R-DARTS early stop after epoch {module.history[-1]['epoch'] + 1}: the dominant eigenvalue grew {stop['ratio']:.2f}x, "
            f"alpha rolled back to epoch {stop['rolled_back_to_epoch'] + 1} (genotype_history.jsonl)"
        )
    return result


def run_name(cfg) -> str:
    """``darts-DATA`` for a search of the DARTS space, ``darts-SPACE-DATA`` for another (``darts-nb201-digits``)."""
    space = get_space(cfg.model_args.get("space") or "darts").name
    return f"darts-{cfg.data}" if space == "darts" else f"darts-{space}-{cfg.data}"


DARTS = Recipe(
    "darts", DARTSSearch, prepare=prepare, check=check, after_fit=after_search, variant=space_of, method_preset=method_preset,
    run_name=run_name,
)
