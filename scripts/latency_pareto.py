"""docs/latency.md, (b) and (c): the searched networks under latency budgets against random search's
NSGA-II front (accuracy vs measured latency), every network measured again here, side by side,
in one process (CPU, eager torch, batch 1, one thread), in interleaved rounds (median), so the two sets share
one machine state.

    PYTHONPATH=. python scripts/latency_pareto.py --space nb201 --data digits-hard --budgets OUT \
        [--study RUN] [--baseline RUN ...] --out docs/img/latency_pareto.png

``--budgets``: the folder of scripts/latency_budget_search.sh (pipeline runs ``SPACE-DATA-bB-sS/``,
those of ``--space`` and ``--data``; ``bnone``: the same search without a budget), or of
scripts/latency_projected.py (the same searches' networks as ``--model.latency_project`` derives them);
``--baseline``: unconstrained searches' retrain runs (the comparisons of docs/darts.md);
``--study``: a ``random-nas --model.sampler=nsga2 --model.objective=latency`` run (optional).
Prints a markdown table of every network and one of every budget over its seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from matplotlib.figure import Figure

from lightning_dlstrat.core import save_figure
from lightning_dlstrat.latency import LatencyTable, time_in_rounds
from lightning_dlstrat.recipes.darts import evaluation_network, latency_table
from lightning_dlstrat.spaces import get_space


def pipelines(folder: Path, space: str, data: str) -> list[tuple[str, int, Path]]:
    """(budget, seed, run) of scripts/latency_budget_search.sh's folders ``SPACE-DATA-bBUDGET-sSEED``."""
    out = []
    for d in sorted(folder.glob(f"{space}-{data}-b*-s*")):
        if not d.is_dir():
            continue
        # a pipeline run (latency_budget_search.sh) or a retrained / copied one (latency_projected.py)
        runs = [r for r in d.iterdir() if r.is_dir() and not r.is_symlink() and (r / "summary.json").is_file()]
        if runs:
            budget, seed = d.name.rsplit("-b", 1)[1].rsplit("-s", 1)
            out.append((budget, int(seed), runs[0]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", type=Path, required=True)
    ap.add_argument("--study", type=Path, help="a random-nas --model.sampler=nsga2 --model.objective=latency run (optional)")
    ap.add_argument("--baseline", type=Path, nargs="*", default=[])
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--data", default="digits-hard")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--table", type=Path, help="the table to predict with, e.g. a search run's latency_table.json (the one it was held to); "
                    "default: this machine's cached or shipped table")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds per network; the median is reported")
    args = ap.parse_args()
    torch.set_num_threads(1)
    space = get_space(args.space)
    build, in_shape, _ = evaluation_network(space, args.data)
    table = LatencyTable.load(args.table or latency_table(space, args.data, threads=1))
    nets: dict[str, torch.nn.Module] = {}  # genotype text -> its network, built once

    def register(g) -> None:
        """``g``'s network, timed in the rounds below (its row's "measured" is filled in there)."""
        nets.setdefault(str(g), build(g))

    rows = []
    for budget, seed, run in pipelines(args.budgets, args.space, args.data):
        s = json.loads((run / "summary.json").read_text())
        g = space.parse(s["genotype"])
        register(g)
        rows.append({"what": "no budget" if budget == "none" else f"budget {budget} ms", "budget": budget, "seed": seed, "genotype": str(g), "acc": 100 * s["test_metrics"]["test/acc"],
                     "predicted": table.predict(space, g)})
    for run in args.baseline:
        s = json.loads((run / "summary.json").read_text())
        g = space.parse(s["genotype"])
        register(g)
        rows.append({"what": "no budget", "budget": "none", "seed": s["seed"], "genotype": str(g), "acc": 100 * s["test_metrics"]["test/acc"],
                     "predicted": table.predict(space, g)})
    trials = json.loads((args.study / "trials.json").read_text()) if args.study else []
    study = []
    for t in trials:
        if t["state"] != "complete":
            continue
        g = space.from_dict(t["genotype"])
        register(g)
        study.append({"trial": t["trial"], "genotype": str(g), "acc": 100 * t["test_acc"], "val": 100 * t["val_acc"], "predicted": table.predict(space, g)})

    # every network timed in --rounds interleaved rounds (A B C ... A B C ...), the median kept (time_in_rounds)
    measured = time_in_rounds({g: (net, in_shape) for g, net in nets.items()}, args.rounds, threads=1)
    for r in rows + study:
        r["measured"] = measured[r["genotype"]]

    print("| search | seed | genotype | predicted ms | measured ms | error % | retrained test acc % |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (str(r["budget"]), r["seed"])):
        print(f"| {r['what']} | {r['seed']} | `{r['genotype']}` | {r['predicted']:.3f} | {r['measured']:.3f} | {100 * (r['predicted'] - r['measured']) / r['measured']:+.1f} | {r['acc']:.2f} |")
    print("\n| budget | seeds | predicted ms (each) | measured ms (each) | within budget: predicted, measured | retrained test acc % (each) | mean |")
    print("|---|---|---|---|---|---|---|")
    for budget in sorted({r["budget"] for r in rows}, key=lambda b: (b == "none", 0.0 if b == "none" else float(b))):
        pts = sorted((r for r in rows if r["budget"] == budget), key=lambda r: r["seed"])
        within = "-" if budget == "none" else f"{sum(r['predicted'] <= float(budget) for r in pts)}, {sum(r['measured'] <= float(budget) for r in pts)} of {len(pts)}"
        predicted = " / ".join(f"{r['predicted']:.3f}" for r in pts)
        measured = " / ".join(f"{r['measured']:.3f}" for r in pts)
        accs = " / ".join(f"{r['acc']:.2f}" for r in pts)
        seeds = ", ".join(str(r["seed"]) for r in pts)
        print(f"| {budget} | {seeds} | {predicted} | {measured} | {within} | {accs} | {statistics.mean(r['acc'] for r in pts):.2f} |")
    print(f"\n{len(nets)} networks, each the median of {args.rounds} interleaved rounds of 50 passes")
    front = [t for t in study if not any(o["val"] >= t["val"] and o["measured"] <= t["measured"] and (o["val"], o["measured"]) != (t["val"], t["measured"]) for o in study)]
    if study:
        print(f"\nNSGA-II: {len(study)} trials; validation front of {len(front)}: " + ", ".join(f"{t['measured']:.3f} ms / {t['acc']:.2f} % (trial {t['trial']})" for t in sorted(front, key=lambda t: t["measured"])))
        print(f"median |error| of the table on the study's cells: {statistics.median(abs(t['predicted'] - t['measured']) / t['measured'] * 100 for t in study):.1f} %")

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    if study:
        ax.scatter([t["measured"] for t in study], [t["acc"] for t in study], s=14, color="0.7", label="random search (NSGA-II) trials")
        f = sorted(front, key=lambda t: t["measured"])
        ax.plot([t["measured"] for t in f], [t["acc"] for t in f], color="0.4", marker="s", markersize=4, label="its front (by validation accuracy)")
    markers = {"none": "o"}
    for budget in sorted({r["budget"] for r in rows}, key=str):
        pts = [r for r in rows if r["budget"] == budget]
        ax.scatter([r["measured"] for r in pts], [r["acc"] for r in pts], s=40, marker=markers.get(budget, "^"), label=f"search, {'no budget' if budget == 'none' else f'budget {budget} ms'}")
        if budget != "none":
            ax.axvline(float(budget), color="0.85", linestyle=":", linewidth=1)
    ax.set(xlabel="measured latency (ms, CPU, eager torch, batch 1, 1 thread)", ylabel="test accuracy (%)", title=f"{args.space} on {args.data}")
    ax.set_ylim(bottom=max(0, min([r["acc"] for r in rows] + [t["acc"] for t in study]) - 5))
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
