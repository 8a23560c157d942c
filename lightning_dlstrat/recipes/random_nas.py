"""Random search over the DARTS space: the baseline every NAS method should beat.

Li & Talwalkar ("Random Search and Reproducibility for Neural Architecture Search", UAI 2019)
showed that sampling architectures uniformly and training each briefly is a strong baseline for
DARTS. The ``random-nas`` recipe samples ``trials`` genotypes uniformly
from the DARTS space (per node, 2 distinct inputs and, for each, an op other than ``none``; seeded
by ``--seed``), trains each with the ``darts-net`` recipe in its own sub-directory, keeps the one
with the best validation accuracy, and writes::

    RUN/trial-000/ ... trial-NNN/   # a full darts-net run each (checkpoints, metrics, genotype.json)
    RUN/trials.json                 # one row per trial: genotype, val / test metrics, wall time
    RUN/genotype.json, genotype.png # the winner, ready for `dlstrat fit --model darts-net --genotype RUN`

Selection uses validation data only. The test accuracy of every trial is recorded in
``trials.json`` for analysis (how well short-training validation ranks architectures), but the
run's ``test_metrics`` are those of the selected trial.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import lightning as L

from ..config import RunConfig
from ..core import DlstratError, atomic_write_json, launch_rank
from ..models.genotype import Genotype, sample_genotype
from ..run import fit_once
from ..trainers.darts_net import DARTSNetClassifier
from ..viz import plot_genotype
from .base import Recipe
from .classifier import after_darts_net


def prepare(model_args: dict[str, Any], given: dict[str, Any]) -> None:
    """Trials sample their own genotypes: the module argument is not the user's to give."""
    if "genotype" in given:
        raise DlstratError("random-nas samples its own genotypes; drop --genotype (use --model darts-net to train a given one)")
    model_args.pop("genotype", None)


def run(recipe: Recipe, cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Sample ``options.trials`` genotypes, fit each in ``run_dir/trial-NNN``, keep the best by validation accuracy."""
    trials = cfg.options["trials"]
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise DlstratError(f"--trials must be a positive integer, not {trials!r}")
    if cfg.resume:
        raise DlstratError("random-nas cannot be resumed in this version: its trials are short, so rerun the command (a resumable study is planned)")
    rng = random.Random(cfg.seed)  # the genotype sequence depends on the seed only
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for t in range(trials):
        genotype = sample_genotype(rng)
        name = f"trial-{t:03d}"
        # every trial starts from the same seed, so trials differ by their architecture only
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        print(f"random-nas {name} ({t + 1}/{trials}): {genotype}", flush=True)
        started = time.time()
        result = fit_once(recipe, cfg, run_dir / name, genotype=str(genotype))
        fit_metrics, test_metrics = result.get("fit_metrics", {}), result.get("test_metrics", {})
        rows.append(
            {
                "trial": t,
                "dir": name,
                "genotype": genotype.to_dict(),
                # after the last epoch (the learning rate has annealed to 0): the selection score
                "val_acc": fit_metrics.get("val/acc"),
                "val_loss": fit_metrics.get("val/loss"),
                "test_acc": test_metrics.get("test/acc"),
                "params": result.get("params"),
                "wall_time_s": round(time.time() - started, 2),
            }
        )
        results.append(result)
        if launch_rank() == 0:
            atomic_write_json(run_dir / "trials.json", rows)  # after every trial: a killed run keeps what it did
    if any(r["val_acc"] is None for r in rows):
        raise DlstratError("random-nas needs validation metrics to choose a trial; do not disable validation (--trainer.limit_val_batches=0)")
    # best validation accuracy; ties (common on small validation splits) go to the lower loss
    best = min(range(trials), key=lambda i: (-rows[i]["val_acc"], rows[i]["val_loss"], i))
    winner = Genotype.from_dict(rows[best]["genotype"])
    if launch_rank() == 0:
        winner.save(run_dir / "genotype.json")
        plot_genotype(winner, run_dir / "genotype.png", title=f"random search: best of {trials} (trial {best})")
    chosen = results[best]
    return {
        "trials": trials,
        "best_trial": best,
        "genotype": str(winner),
        "val_acc": rows[best]["val_acc"],
        "fit_metrics": chosen.get("fit_metrics", {}),
        "test_metrics": chosen.get("test_metrics", {}),
        "best_checkpoint": chosen.get("best_checkpoint"),
        "params": chosen.get("params"),
        "report": [
            *(f"  {r['dir']}: val/acc={r['val_acc']:.4f} val/loss={r['val_loss']:.4f}" + (f" test/acc={r['test_acc']:.4f}" if r["test_acc"] is not None else "") for r in rows),
            f"best of {trials} by validation accuracy: {rows[best]['dir']} (genotype.json, trials.json in the run directory)",
            f"genotype: {winner}",
        ],
    }


RANDOM_NAS = Recipe("random-nas", DARTSNetClassifier, prepare=prepare, run=run, after_fit=after_darts_net)
