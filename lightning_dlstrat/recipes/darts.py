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

from ..core import DlstratError, shorten
from ..methods import expand, selectable
from ..spaces import get_space
from ..trainers.darts_search import DARTSSearch
from ..viz import plot_collapse
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
    plot_collapse(module.history, run_dir / "collapse.png")  # with --model.eigen_every >= 1 only
    return {
        "genotype": str(genotype),
        "space": space.name,
        "report": [f"genotype: {genotype}", f"retrain with: dlstrat fit --model {space.retrain_recipe} --genotype {run_dir / 'genotype.json'}"],
    }


DARTS = Recipe("darts", DARTSSearch, prepare=prepare, after_fit=after_search, variant=space_of, method_preset=method_preset)
