"""The ``darts`` recipe: a DARTS search in a search space (``--model.space=darts|nb201``), then its
genotype, history and pictures in the run directory.

Presets (``presets/darts.yaml``) come per space: the DARTS paper's for ``darts`` (the default),
the NAS-Bench-201 benchmark's for ``nb201`` (the yaml's ``variants.nb201`` table replaces ``all``
and ``datasets``), each with a small digits search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core import DlstratError, shorten
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


DARTS = Recipe("darts", DARTSSearch, after_fit=after_search, variant=space_of)
