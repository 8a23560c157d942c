"""The ``darts`` recipe: a DARTS search, then its genotype, history and pictures in the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import viz
from ..trainers.darts_search import DARTSSearch
from .base import Recipe


def after_search(module: DARTSSearch, trainer, datamodule, run_dir: Path) -> dict[str, Any]:
    """Write ``genotype.json``, the history and the pictures; say how to retrain the result."""
    genotype = module.genotype()  # the same on every rank: alpha is kept identical
    if not trainer.is_global_zero:
        return {"genotype": str(genotype)}
    genotype.save(run_dir / "genotype.json")
    if not (run_dir / "genotype_history.jsonl").is_file():
        module.write_history(run_dir)
    normal, reduce = module.net.edge_weights()
    viz.plot_alpha(normal.cpu(), reduce.cpu(), module.net.primitives, run_dir / "alpha.png")
    viz.plot_genotype(genotype, run_dir / "genotype.png")
    return {
        "genotype": str(genotype),
        "report": [f"genotype: {genotype}", f"retrain with: dlstrat fit --model darts-net --genotype {run_dir / 'genotype.json'}"],
    }


DARTS = Recipe("darts", DARTSSearch, after_fit=after_search)
