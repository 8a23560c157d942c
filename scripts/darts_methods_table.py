"""Print the markdown rows of docs/darts.md's collapse-fix comparison from scripts/darts_methods_digits.sh's output.

    python scripts/darts_methods_table.py OUT [SEED]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    out, seed = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "0"
    print("| method | retrained test acc % | params (retrained) | normal / reduce skips | final eigenvalue | supernet test acc % | wall: search + retrain |")
    print("|---|---|---|---|---|---|---|")
    for search_dir in sorted(out.glob(f"search-*-s{seed}")):
        method = search_dir.name[len("search-") : -len(f"-s{seed}")]
        retrain_dir = out / f"retrain-{method}-s{seed}"
        runs = [p for p in search_dir.iterdir() if p.is_dir()]
        retrain = [p for p in retrain_dir.iterdir() if p.is_dir()] if retrain_dir.is_dir() else []
        if not runs or not retrain or not (retrain[0] / "summary.json").is_file():
            continue  # not finished
        run = runs[0]
        s, r = (json.loads((d / "summary.json").read_text()) for d in (run, retrain[0]))
        history = [json.loads(line) for line in (run / "genotype_history.jsonl").read_text().splitlines()]
        last = [h for h in history if "eigenvalue" in h][-1]
        skips = sum(op == "skip_connect" for op, _ in history[-1]["normal"]), sum(op == "skip_connect" for op, _ in history[-1]["reduce"])
        print(
            f"| {method} | {100 * r['test_metrics']['test/acc']:.2f} | {r['params']:,} | {skips[0]} / {skips[1]} | {last['eigenvalue']:.3f} (epoch {last['epoch']}) "
            f"| {100 * s['test_metrics']['test/acc']:.2f} | {s['wall_time_s']:.0f} s + {r['wall_time_s']:.0f} s |"
        )


if __name__ == "__main__":
    main()
