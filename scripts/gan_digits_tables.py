"""Run the GAN comparisons of docs/gan.md on digits and print their tables (markdown).

    python scripts/gan_digits_tables.py conditional   # the default conditional recipe, seeds 0-2
    python scripts/gan_digits_tables.py diffaugment   # DiffAugment policies x 10% / 100% of the training data, seeds 0-2

Every row is one real `dlstrat fit` run (one thread each, run one after another); its numbers are
read back from the run's summary.json. Runs go under runs/tables (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SEEDS = (0, 1, 2)
# 2,000 generator steps for every row, whatever the data fraction (a third of the digits preset's
# 6,300, to fit 15 runs on 2 cores); drop_last keeps the batches at 64 (the 10% split, 129 images,
# would end in a batch of 1)
COMMON = ["--model", "gan", "--trainer.max_steps=2000", "--data.drop_last=true"]
# the paper's full policy (for hundreds of images) on the 10% split only; "" is no augmentation
POLICIES = {0.1: ("", "translation", "color,translation,cutout"), 1.0: ("", "translation")}


def fit(args: list[str], out: str) -> tuple[dict, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "lightning_dlstrat", "fit", *args, "--out", out], capture_output=True, text=True, env=env)
    wall = time.time() - started
    if proc.returncode:
        raise SystemExit(f"failed: dlstrat fit {' '.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    run_dir = [line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("run directory: ")][-1]
    return json.loads((Path(run_dir) / "summary.json").read_text())["gan_metrics"], wall


def conditional(out: str) -> None:
    print("| seed | labelled as asked % | lowest class % | lowest class confident % | confident % | classifier FD | classifier KID | classifier IS | wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for seed in SEEDS:
        m, wall = fit(["--model", "gan", "--model.conditional=true", "--seed", str(seed)], out)
        print(
            f"| {seed} | {m['label_agreement_pct']:.1f} | {min(m['label_agreement_per_class_pct']):.1f} | {min(m['confident_per_class_pct']):.1f} "
            f"| {m['confident_pct']:.1f} | {m['classifier_fd']:.2f} | {m['classifier_kid']:.3f} | {m['classifier_is']:.2f} | {wall:.0f} |",
            flush=True,
        )


def diffaugment(out: str) -> None:
    print("| training data | DiffAugment | seed | confident % | classifier FD | classifier KID | classifier IS | wall (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for fraction, policies in POLICIES.items():
        for policy in policies:
            for seed in SEEDS:
                args = [*COMMON, f"--data.train_fraction={fraction}", f"--model.diffaugment={policy}", "--seed", str(seed)]
                m, wall = fit(args, out)
                print(
                    f"| {fraction:.0%} | {policy or 'none'} | {seed} | {m['confident_pct']:.1f} | {m['classifier_fd']:.2f} "
                    f"| {m['classifier_kid']:.3f} | {m['classifier_is']:.2f} | {wall:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=("conditional", "diffaugment"))
    parser.add_argument("--out", default="runs/tables")
    args = parser.parse_args()
    {"conditional": conditional, "diffaugment": diffaugment}[args.table](args.out)
