"""Markdown tables of docs/darts.md's search comparisons, from the run folders of
scripts/darts_methods_digits.sh and scripts/digits_hard_search.sh.

    python scripts/search_table.py OUT [--seeds 0 1 2] [--prefix darts-] [--space darts|nb201] [METHOD ...]

Folders are ``OUT/search-{prefix}{method}-s{seed}/RUN`` and ``OUT/retrain-{prefix}{method}-s{seed}/RUN``;
``random`` is a random-nas study. One row per method: the retrained test accuracy per seed and its
mean, parameters, the skip connections the genotype keeps (darts: normal+reduce), the collapse monitor's last eigenvalue,
the search run's own test accuracy (the supernet's; for random search the winning trial's) and the
wall times (``summary.json``'s ``wall_time_s``). A seed not finished is shown as "-".
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from lightning_dlstrat.spaces import get_space

METHODS = ("random", "darts", "darts-", "beta-darts", "sdarts-rs", "fair-darts", "gdas", "drnas", "pc-darts")


def finished(folder: Path) -> Path | None:
    runs = sorted(p for p in folder.glob("*/") if (p / "summary.json").is_file()) if folder.is_dir() else []
    return runs[-1] if runs else None


def one(out: Path, prefix: str, method: str, seed: int, space) -> dict | None:
    search, retrain = finished(out / f"search-{prefix}{method}-s{seed}"), finished(out / f"retrain-{prefix}{method}-s{seed}")
    if search is None or retrain is None:
        return None
    s, r = (json.loads((d / "summary.json").read_text()) for d in (search, retrain))
    kept = space.chosen_ops(space.parse(r["genotype"]))
    skips = "+".join(str(ops.count("skip_connect")) for ops in kept.values())  # darts: normal+reduce
    history = search / "genotype_history.jsonl"
    eigen = [json.loads(line).get("eigenvalue") for line in history.read_text().splitlines()] if history.is_file() else []
    eigen = [e for e in eigen if e is not None]
    return {"acc": 100 * r["test_metrics"]["test/acc"], "search_acc": 100 * s["test_metrics"]["test/acc"], "params": r["params"], "skips": skips,
            "eigen": eigen[-1] if eigen else None, "wall": (s["wall_time_s"], r["wall_time_s"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("methods", nargs="*", default=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prefix", default="")
    parser.add_argument("--space", default="darts")
    args = parser.parse_args()
    space = get_space(args.space)
    seeds = "/".join(f"s{s}" for s in args.seeds)
    print(f"| method | retrained test acc % ({seeds}) | mean | params | skips kept | last eigenvalue | search run's test acc % | wall: search + retrain (mean) |")
    print("|---|---|---|---|---|---|---|---|")
    for method in args.methods:
        rows = [one(args.out, args.prefix, method, seed, space) for seed in args.seeds]
        done = [r for r in rows if r is not None]
        if not done:
            continue
        def cell(fmt) -> str:
            return " / ".join("-" if r is None else fmt(r) for r in rows)

        accs = cell(lambda r: format(r["acc"], ".2f"))
        params = cell(lambda r: format(r["params"], ","))
        skips = cell(lambda r: r["skips"])
        eigen = cell(lambda r: "-" if r["eigen"] is None else format(r["eigen"], ".3f"))
        searched = cell(lambda r: format(r["search_acc"], ".2f"))
        mean = statistics.mean(r["acc"] for r in done)
        wall = f"{statistics.mean(r['wall'][0] for r in done):.0f} s + {statistics.mean(r['wall'][1] for r in done):.0f} s"
        print(f"| {method} | {accs} | **{mean:.2f}** | {params} | {skips} | {eigen} | {searched} | {wall} |")


if __name__ == "__main__":
    main()
