"""docs/latency.md, (b): what ``--model.latency_project`` (the default) makes of budgeted searches run without it.

The projection changes only how the last genotype is derived, not the search (the loss and the
multiplier never see it), so a search run with ``--model.latency_project=false`` (or before the
option existed) gives the projected network exactly: its last checkpoint's alpha, derived again
with the projection on. Each network that changes is retrained with the run's retrain recipe and
seed (as ``dlstrat fit --retrain`` would have); one that does not keeps the run's own result.

    PYTHONPATH=. python scripts/latency_projected.py BUDGETS OUT     # BUDGETS: scripts/latency_budget_search.sh's folder

Writes ``OUT/SPACE-DATA-bB-sS/RUN/summary.json`` (the retrained network, or a copy of the run's
summary when the projection changed nothing), which ``scripts/latency_pareto.py --budgets OUT`` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from lightning_dlstrat.latency import LatencyTable
from lightning_dlstrat.trainers.darts_search import DARTSSearch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("budgets", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    for folder in sorted(args.budgets.glob("*-b*-s*")):
        runs = [r for r in folder.glob("*-pipeline-2*") if (r / "summary.json").is_file()]
        if not folder.is_dir() or not runs or folder.name.split("-b")[-1].startswith("none"):
            continue
        run = runs[0]
        summary = json.loads((run / "summary.json").read_text())
        search = run / "search"
        module = DARTSSearch.load_from_checkpoint(search / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        space, target = module.space, float(module.hparams.latency_target)
        table = LatencyTable.load(module.hparams.latency_table)
        before = space.parse(summary["genotype"])
        after = module.genotype()  # the space's rule, the method's, then the projection
        name, dest = folder.name, args.out / folder.name
        if (dest / "done").is_file():
            continue
        line = f"{name}: {table.predict(space, before):.3f} -> {table.predict(space, after):.3f} ms predicted (budget {target:g})"
        if str(after) == str(before):
            (dest / "same").mkdir(parents=True, exist_ok=True)
            (dest / "same" / "summary.json").write_text(json.dumps(summary))
            print(line + ": unchanged", flush=True)
        else:
            data = name.split("-b")[0].split("-", 1)[1]  # SPACE-DATA-bB-sS
            cmd = [sys.executable, "-m", "lightning_dlstrat", "fit", "--model", space.retrain_recipe, "--data", data, "--genotype", str(after),
                   "--seed", str(summary["seed"]), "--out", str(dest)]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if done.returncode != 0:
                raise SystemExit(f"{name}: retraining failed:\n{done.stderr[-3000:]}")
            retrained = json.loads(next(p for p in dest.glob("*/summary.json") if not p.parent.is_symlink()).read_text())
            print(line + f": retrained {100 * summary['test_metrics']['test/acc']:.2f} -> {100 * retrained['test_metrics']['test/acc']:.2f} %", flush=True)
        (dest / "done").write_text("")


if __name__ == "__main__":
    main()
