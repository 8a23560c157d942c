"""Seconds per training step of each recipe's digits preset at 1 and 2 intra-op threads, idle and loaded.

What it answers: which ``threads:`` each preset in ``lightning_dlstrat/recipes/presets/`` should
carry. A second OpenMP thread only pays when the step has enough work per kernel to share; on a
small network the threads' spin-waiting costs more than it saves, and on a machine whose cores
are busy with other work a thread that is descheduled stalls every parallel region of the other.

How it measures (the numbers to quote are the per-pair ratios):

- two **worker processes**, one started with ``OMP_NUM_THREADS=1`` and one with ``=2``, each
  importing torch and Lightning once; the driver asks them in turn, A B A B, to train a recipe's
  digits preset for a few dozen steps (``Trainer.fit`` on the module and datamodule
  ``config.resolve`` builds, as ``dlstrat fit`` does, without logging, checkpoints or
  validation) and reports the median seconds per training batch after a few warm-up batches;
- each recipe is measured ``--reps`` times **idle** (no load of ours; other users of the machine
  are not under our control: the load average is printed) and **loaded**: the driver starts one
  busy-loop Python process per core (``--load-procs``) before the pair and stops it after;
- a pair's ratio is (2-thread seconds per step) / (1-thread seconds per step): above 1 the second
  thread costs time, below 1 it gains.

    PYTHONPATH=. python benchmarks/threads.py                        # all recipes, 5-15 minutes on 2 cores
    PYTHONPATH=. python benchmarks/threads.py --recipes darts,mlp --reps 3 --json threads.jsonl

One training batch is one step of the recipe as it trains: for ``darts`` an architecture step and
a weight step, for ``gan`` a discriminator step and (n_critic=1) a generator step. The
``random-nas`` trial is a ``darts-net`` module with the random-nas preset and a genotype sampled
from the space (seed 0). Results: docs/benchmarks.md, "Threads".
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIN_TIMED = 3  # batches timed at least, however slow they are

# name -> (recipe, module flags): each recipe's digits preset (the preset applies; these flags
# only say what the preset needs to be given: a genotype, the space)
CASES = {  # the quick ones first, so that a cut-short run has something to show
    "mlp": ("mlp", {}),
    "gan": ("gan", {}),
    "nb201-net": ("nb201-net", {"genotype": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"}),
    "darts-nb201": ("darts", {"space": "nb201"}),
    "darts-net": ("darts-net", {"genotype": "DARTS_V2"}),
    "random-nas-trial": ("random-nas", {}),
    "darts": ("darts", {}),
}


# --- the worker: one process, one thread count, measures what the driver asks --------------------
def measure(case: str, warmup: int, steps: int, seconds: float) -> dict:
    import lightning as L
    import torch

    from lightning_dlstrat.config import resolve
    from lightning_dlstrat.recipes import get_recipe
    from lightning_dlstrat.run import build_module

    recipe_name, model_flags = CASES[case]
    recipe = get_recipe(recipe_name)
    cfg = resolve(recipe, flags={"model": {"name": recipe_name, **model_flags}, "data": {"name": "digits"}})
    dm, module = cfg.built.datamodule, cfg.built.module
    if recipe_name == "random-nas":  # a trial: the space's retrain module with a sampled genotype
        from lightning_dlstrat.recipes.random_nas import TRIAL_RECIPES
        from lightning_dlstrat.spaces import get_space

        space = get_space(cfg.options["space"])
        module = build_module(TRIAL_RECIPES[space.retrain_recipe], cfg, genotype=str(space.sample(random.Random(0))))

    times: list[float] = []

    class Timer(L.Callback):
        def __init__(self):
            self.start = 0.0
            self.seen = 0
            self.first = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            took = time.perf_counter() - self.start
            self.seen += 1
            if self.seen <= warmup:
                return
            if self.first is None:
                self.first = time.perf_counter() - took
            times.append(took)
            if len(times) >= steps or (len(times) >= MIN_TIMED and time.perf_counter() - self.first > seconds):
                trainer.should_stop = True

    kept = {k: v for k, v in cfg.trainer.items() if k not in ("max_epochs", "max_steps", "logger", "callbacks", "devices", "strategy")}
    with tempfile.TemporaryDirectory() as scratch:  # what modules write on their own (a search's history, GAN samples)
        trainer = L.Trainer(
            **kept, accelerator="cpu", devices=1, max_epochs=10_000, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Timer()], default_root_dir=scratch,
        )
        trainer.fit(module, datamodule=dm)
    return {"case": case, "threads": torch.get_num_threads(), "times": times, "median": statistics.median(times)}


def worker() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    out = sys.stdout
    sys.stdout = sys.stderr  # Lightning's prints must not mix with the answers
    print(json.dumps({"ready": torch.get_num_threads()}), file=out, flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        print(json.dumps(measure(**ask)), file=out, flush=True)


# --- the driver ------------------------------------------------------------------------------------
class Worker:
    def __init__(self, threads: int, log):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
        self.threads = threads
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=ROOT,
        )
        ready = json.loads(self.proc.stdout.readline())
        assert ready["ready"] == threads, ready

    def measure(self, **ask) -> dict:
        self.proc.stdin.write(json.dumps(ask) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.threads}-thread worker died; see its log")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Load:
    """One busy-loop Python process per core while in use: a machine whose cores are all taken."""

    def __init__(self, procs: int):
        self.procs, self.running = procs, []

    def __enter__(self):
        self.running = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.procs)]
        time.sleep(1.0)  # let the scheduler see them
        return self

    def __exit__(self, *exc):
        for p in self.running:
            p.terminate()
        for p in self.running:
            p.wait()
        self.running = []


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def summarise(records: list[dict]) -> list[dict]:
    rows = []
    for case in dict.fromkeys(r["case"] for r in records):
        for load in ("idle", "loaded"):
            pairs = [r for r in records if r["case"] == case and r["load"] == load]
            if not pairs:
                continue
            ratios = [p["two"]["median"] / p["one"]["median"] for p in pairs]
            rows.append({
                "case": case, "load": load, "pairs": len(pairs),
                "one": statistics.median(p["one"]["median"] for p in pairs),
                "two": statistics.median(p["two"]["median"] for p in pairs),
                "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                "loadavg": [p["loadavg_before"] for p in pairs],
            })
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--recipes", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    p.add_argument("--reps", type=int, default=2, help="A B pairs per recipe and load condition")
    p.add_argument("--warmup", type=int, default=2, help="batches not timed at the start of each measurement")
    p.add_argument("--steps", type=int, default=30, help="timed batches per measurement (at most)")
    p.add_argument("--seconds", type=float, default=4.0, help=f"stop timing after this long (once {MIN_TIMED} batches are in)")
    p.add_argument("--load-procs", type=int, default=os.cpu_count(), help="busy-loop processes of the loaded condition")
    p.add_argument("--loads", default="idle,loaded", help="which conditions: idle, loaded or both")
    p.add_argument("--json", type=Path, help="append one JSON record per pair to this file")
    p.add_argument("--log", type=Path, default=Path(os.devnull), help="the workers' stderr (Lightning's output)")
    args = p.parse_args(argv)
    if args.worker:
        return worker()
    cases = [c.strip() for c in args.recipes.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"unknown recipe(s) {unknown}; choose from {', '.join(CASES)}")
    loads = [c.strip() for c in args.loads.split(",")]

    import signal

    import lightning
    import torch

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: the finally blocks stop the load and the workers
    started = time.time()
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, lightning {lightning.__version__}, Python {platform.python_version()}, "
          f"load average {loadavg()}", flush=True)
    records: list[dict] = []
    with open(args.log, "a") as log:
        workers = {1: Worker(1, log), 2: Worker(2, log)}
        try:
            ask = dict(warmup=args.warmup, steps=args.steps, seconds=args.seconds)
            for case in cases:
                for rep in range(args.reps):
                    for load in loads:
                        before = loadavg()
                        ctx = Load(args.load_procs) if load == "loaded" else None
                        if ctx:
                            ctx.__enter__()
                        try:
                            one = workers[1].measure(case=case, **ask)
                            two = workers[2].measure(case=case, **ask)
                        finally:
                            if ctx:
                                ctx.__exit__(None, None, None)
                        record = {"case": case, "load": load, "rep": rep, "loadavg_before": before, "loadavg_after": loadavg(),
                                  "one": one, "two": two, "ratio": two["median"] / one["median"]}
                        records.append(record)
                        print(f"{case:17s} {load:6s} rep {rep}: 1 thread {one['median']:.4f} s/step ({len(one['times'])} steps), "
                              f"2 threads {two['median']:.4f} s/step ({len(two['times'])}), 2/1 = {record['ratio']:.2f}  "
                              f"[load {before} -> {record['loadavg_after']}]", flush=True)
                        if args.json:
                            with open(args.json, "a") as f:
                                f.write(json.dumps({**record, "torch": torch.__version__, "lightning": lightning.__version__}) + "\n")
        finally:
            for w in workers.values():
                w.close()
    print(f"\n| recipe (digits preset) | load | pairs | 1 thread s/step | 2 threads s/step | 2 threads / 1 thread per pair: median (min, max) |")
    print("|---|---|---|---|---|---|")
    for row in summarise(records):
        print(f"| {row['case']} | {row['load']} | {row['pairs']} | {row['one']:.4f} | {row['two']:.4f} | "
              f"**{row['ratio']:.2f}** ({row['ratio_min']:.2f}, {row['ratio_max']:.2f}) |")
    print(f"\n# {time.time() - started:.0f} s in all; load average at the end {loadavg()}")


if __name__ == "__main__":
    main()
