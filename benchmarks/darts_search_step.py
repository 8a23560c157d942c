"""Throughput and peak memory of one DARTS search step, fast vs per-edge reference side by side.

Runs :meth:`lightning_dlstrat.trainers.darts_search.DARTSSearch.search_step`, the step the
LightningModule trains with (architecture step, then weight step; DARTS, Liu et al. ICLR 2019,
Sec. 2.3), on random data through Lightning Fabric, which supplies the device, autocast and the
fp16 loss scaler exactly as the Trainer's precision plugin does, without a Trainer's loops.

    # from the repository root (or with the package installed):
    PYTHONPATH=. python benchmarks/darts_search_step.py --compare --preset digits --device cpu
    PYTHONPATH=. python benchmarks/darts_search_step.py --compare --batch-size 16 --device cpu --order 2
    PYTHONPATH=. python benchmarks/darts_search_step.py --compare --device cuda --precision bf16-mixed
    PYTHONPATH=. python benchmarks/darts_search_step.py --device cuda --cuda-graph   # fast only, captured step
    PYTHONPATH=. python benchmarks/darts_search_step.py --implementation reference   # one implementation

Default (``--preset cifar10``): C=16, 8 cells, batch 64 training + 64 validation images of
3x32x32, as in the paper (App. A.1.1). ``--preset digits``: 1x8x8, C=8, 5 cells, batch 64 (the
``dlstrat fit --model darts`` search). Explicit flags override the preset.

``--compare`` builds both supernets from the same seed (the fast one loads the reference's
weights, so both compute the same function) and alternates their steps, reference then fast,
on the same random batches. Each pair's ratio (reference time / fast time) cancels the drift
of a shared machine, so the ratio's median, min and max are the figures to quote; absolute
medians, the date and the load average (``os.getloadavg``) are printed as context.

Memory, per step: on CUDA the peak ``max_memory_allocated`` during the step and its growth over
the memory allocated before it; on CPU the peak resident set size during the step over the RSS
before it (``/proc/self/status`` VmHWM - VmRSS, the high-water mark reset before every step by
writing 5 to ``/proc/self/clear_refs``), so the two implementations' peaks do not mix although
they share a process. Every order runs in its own process, started with a fixed glibc mmap
threshold so that freed tensors leave the RSS instead of staying in the heap.

``--json FILE`` appends one JSON record per order, for scripts (``scripts/gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRESETS = {
    "cifar10": dict(channels=16, layers=8, batch_size=64, size=32, in_chans=3),
    "digits": dict(channels=8, layers=5, batch_size=64, size=8, in_chans=1),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cifar10")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    p.add_argument("--batch-size", type=int, help="training images per step (as many validation images again)")
    p.add_argument("--channels", type=int, help="C, channels of the first cells")
    p.add_argument("--layers", type=int, help="cells in the supernet")
    p.add_argument("--size", type=int, help="image height and width")
    p.add_argument("--in-chans", type=int, help="image channels")
    p.add_argument("--partial-channels", type=int, default=1, help="PC-DARTS k (1: off)")
    p.add_argument("--precision", default="32-true", help="32-true, bf16-mixed or 16-mixed")
    p.add_argument("--warmup", type=int, default=1, help="steps (pairs with --compare) run before measuring")
    p.add_argument("--steps", type=int, default=3, help="steps (pairs with --compare) measured")
    p.add_argument("--order", choices=["1", "2", "both"], default="both")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    p.add_argument("--compare", action="store_true", help="alternate fast and reference steps, print the per-pair ratios")
    p.add_argument("--implementation", choices=["fast", "reference"], default="fast", help="without --compare: which supernet")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="NHWC memory (fast implementation)")
    p.add_argument("--cuda-graph", action="store_true", help="CUDA: run the fast step as a captured CUDA graph (lightning_dlstrat.cuda_graph)")
    p.add_argument("--json", help="append one JSON record per order to this file")
    p.add_argument("--memory-run", action="store_true", help=argparse.SUPPRESS)  # internal: one implementation's CPU memory
    args = p.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# --- memory ---------------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class StepMemory:
    """Peak memory of one step over the memory held before it (CUDA allocator or CPU RSS)."""

    def __init__(self, device):
        import torch

        self.torch, self.device, self.cuda = torch, device, device.type == "cuda"
        try:  # resetting VmHWM needs Linux >= 4.0 and a writable clear_refs
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.cpu_ok = True
        except OSError:
            self.cpu_ok = False

    def start(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)
            self.before = self.torch.cuda.memory_allocated(self.device)
        elif self.cpu_ok:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
            self.before = _proc_status_kib("VmRSS") * 1024

    def stop(self) -> dict[str, float]:
        """{'peak_gib': absolute peak, 'growth_gib': peak - before} (CPU: RSS; NaN where unreadable)."""
        gib = 2**30
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            peak = self.torch.cuda.max_memory_allocated(self.device)
        elif self.cpu_ok:
            peak = _proc_status_kib("VmHWM") * 1024
        else:
            return {"peak_gib": float("nan"), "growth_gib": float("nan")}
        return {"peak_gib": peak / gib, "growth_gib": (peak - self.before) / gib}


# --- building and stepping --------------------------------------------------------------------------
def build(args, implementation: str, fabric, reference=None):
    """(search module, step callable) set up on Fabric's device; ``reference``: copy its weights."""
    import torch

    from lightning_dlstrat.trainers.darts_search import DARTSSearch

    torch.manual_seed(0)
    search = DARTSSearch(
        in_shape=(args.in_chans, args.size, args.size),
        num_classes=10,
        C=args.channels,
        layers=args.layers,
        partial_channels=args.partial_channels,
        order=int(args.order),
        implementation=implementation,
        channels_last=args.channels_last,
    )
    if reference is not None:
        search.net.load_reference(reference.net)  # same weights, alpha and BatchNorm statistics
    w_opt, a_opt = search.make_optimizers()
    _, w_opt, a_opt = fabric.setup(search, w_opt, a_opt)  # on the device, with Fabric's backward

    if args.cuda_graph and implementation == "fast":
        from lightning_dlstrat.cuda_graph import GraphedSearchStep

        graphed = GraphedSearchStep(search, w_opt, a_opt, autocast=fabric.autocast)
        return search, lambda train, val: graphed(train, val)

    def step(train, val):
        with fabric.autocast():
            search.search_step(train, val, w_opt, a_opt)

    return search, step


def random_batch(args, device):
    import torch

    x = torch.randn(args.batch_size, args.in_chans, args.size, args.size, device=device)  # (B, C, H, W)
    return x, torch.randint(0, 10, (args.batch_size,), device=device)  # (B,)


def timed(step, train, val, memory: StepMemory, cuda: bool) -> tuple[float, dict[str, float]]:
    import torch

    memory.start()
    start = time.perf_counter()
    step(train, val)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, memory.stop()


def context(args, fabric) -> dict:
    import lightning
    import torch

    cuda = fabric.device.type == "cuda"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load": [round(x, 2) for x in os.getloadavg()],
        "device": torch.cuda.get_device_name(fabric.device) if cuda else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "threads": None if cuda else torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "precision": str(fabric.strategy.precision.precision),
        "config": (
            f"{args.in_chans}x{args.size}x{args.size} C={args.channels} layers={args.layers} "
            f"batch={args.batch_size}+{args.batch_size} k={args.partial_channels} order={args.order}"
            f"{' channels_last' if args.channels_last else ''}{' cuda_graph' if args.cuda_graph else ''}"
        ),
    }


def measure(args: argparse.Namespace) -> dict:
    import lightning as L
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cpu":
        torch.set_num_threads(args.threads)
    fabric = L.Fabric(accelerator=device, devices=1, precision=args.precision)
    cuda = fabric.device.type == "cuda"
    memory = StepMemory(fabric.device)
    impls = ["reference", "fast"] if args.compare else [args.implementation]
    searches, steps = {}, {}
    for impl in impls:
        searches[impl], steps[impl] = build(args, impl, fabric, reference=searches.get("reference") if impl == "fast" else None)
    record = context(args, fabric)
    times = {impl: [] for impl in impls}
    mem = {impl: [] for impl in impls}
    torch.manual_seed(1)
    for i in range(args.warmup + args.steps):
        train, val = random_batch(args, fabric.device), random_batch(args, fabric.device)
        for impl in impls:  # A B A B ...: both see the same batches and the same machine state
            seconds, m = timed(steps[impl], train, val, memory, cuda)
            if i >= args.warmup:
                times[impl].append(seconds)
                mem[impl].append(m)
    record["load_after"] = [round(x, 2) for x in os.getloadavg()]
    for impl in impls:
        med = statistics.median(times[impl])
        record[impl] = {
            "median_s": med,
            "train_img_per_s": args.batch_size / med,
            "times_s": times[impl],
            "peak_gib": max(m["peak_gib"] for m in mem[impl]),
            "growth_gib": max(m["growth_gib"] for m in mem[impl]),
        }
    if args.compare:
        ratios = [r / f for r, f in zip(times["reference"], times["fast"])]
        record["ratio"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "pairs": len(ratios)}
    return record


def memory_run(args: argparse.Namespace) -> str:
    """CPU: one implementation alone in this process; its peak RSS over the RSS before its first step."""
    import lightning as L
    import torch

    torch.set_num_threads(args.threads)
    fabric = L.Fabric(accelerator="cpu", devices=1, precision=args.precision)
    search, step = build(args, args.implementation, fabric)
    torch.manual_seed(1)
    batches = [(random_batch(args, fabric.device), random_batch(args, fabric.device)) for _ in range(args.warmup + args.steps)]
    before = _proc_status_kib("VmRSS")
    for train, val in batches:
        step(train, val)
    growth = (_proc_status_kib("VmHWM") - before) / 2**20
    return f"  {args.implementation:9s} peak RSS growth +{growth:.3f} GiB over {before / 2**20:.3f} GiB before its first step (own process, {len(batches)} steps)"


def report(record: dict) -> str:
    mem_kind = "CUDA peak" if record["threads"] is None else "RSS growth (shared process)"
    lines = [
        f"[{record['config']} | {record['precision']} | {record['device']}"
        f"{'' if record['threads'] is None else ' threads=' + str(record['threads'])} | torch {record['torch']} "
        f"lightning {record['lightning']} | {record['date']} load {record['load']} -> {record['load_after']}]"
    ]
    for impl in ("reference", "fast"):
        if impl in record:
            r = record[impl]
            peak = f"peak {r['peak_gib']:.3f} GiB, " if record["threads"] is None else ""
            lines.append(
                f"  {impl:9s} median {r['median_s']:.4f} s/step ({r['train_img_per_s']:7.1f} train img/s)  "
                f"{mem_kind}: {peak}+{r['growth_gib']:.3f} GiB during the step"
            )
    if "ratio" in record:
        q = record["ratio"]
        lines.append(f"  reference/fast per pair: median {q['median']:.2f}x  (min {q['min']:.2f}x, max {q['max']:.2f}x, {q['pairs']} pairs)")
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.memory_run:
        print(memory_run(args), flush=True)
        return
    if args.order != "both":
        record = measure(args)
        print(report(record), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(record) + "\n")
        return
    # one process per order; a fixed mmap threshold returns freed tensors to the OS at once, so
    # the RSS high-water mark measures what a step needs, not what glibc's heap kept from before
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    import torch

    cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    script = str(Path(__file__).resolve())
    for order in ("1", "2"):
        subprocess.run([sys.executable, script, *argv, "--order", order], check=True, env=env)
        if args.compare and cpu:
            # peaks of two implementations in one process mix (the heap keeps what one freed),
            # so on CPU each one's memory is measured again alone, in its own process
            for impl in ("reference", "fast"):
                extra = ["--order", order, "--implementation", impl, "--memory-run", "--warmup", "1", "--steps", "1"]
                subprocess.run([sys.executable, script, *[a for a in argv if a != "--compare"], *extra], check=True, env=env)


if __name__ == "__main__":
    main()
