"""Throughput and peak memory of one DARTS search step, first and second order.

Runs :meth:`lightning_dlstrat.trainers.darts_search.DARTSSearch.search_step`, the step the
LightningModule trains with (architecture step, then weight step), on random data through
Lightning Fabric, which supplies the device, autocast and the fp16 loss scaler exactly as the
Trainer's precision plugin does, without a Trainer's loops around it.

    # from the repository root (or with the package installed):
    PYTHONPATH=. python benchmarks/darts_search_step.py           # the paper's CIFAR-10 search step
    PYTHONPATH=. python benchmarks/darts_search_step.py --preset digits --device cpu
    PYTHONPATH=. python benchmarks/darts_search_step.py --device cuda --precision bf16-mixed --order 2
    PYTHONPATH=. python benchmarks/darts_search_step.py --preset digits --implementation reference  # per-edge baseline

Default (``--preset cifar10``): C=16, 8 cells, batch 64 training + 64 validation images of
3x32x32, as in the paper (App. A.1.1). ``--preset digits``: 1x8x8, C=8, 5 cells, batch 64 (the
``dlstrat fit --model darts`` default search). Explicit flags override the preset.

Prints, per order: training images per second (batch / step time, median over ``--steps``
measured steps after ``--warmup`` unmeasured ones) and the peak memory: CUDA
``max_memory_allocated`` on a GPU; on CPU the process's peak resident set size
(``resource.getrusage``), so each order runs in its own process and the RSS before the first
step is printed too.
"""

from __future__ import annotations

import argparse
import resource
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
    p.add_argument("--warmup", type=int, default=1, help="steps run before measuring")
    p.add_argument("--steps", type=int, default=3, help="steps measured")
    p.add_argument("--order", choices=["1", "2", "both"], default="both")
    p.add_argument("--implementation", choices=["fast", "reference"], default="fast", help="batched edges or the per-edge reference")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="NHWC memory (fast implementation)")
    args = p.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def measure(args: argparse.Namespace) -> str:
    import lightning as L
    import torch

    from lightning_dlstrat.trainers.darts_search import DARTSSearch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.manual_seed(0)
    fabric = L.Fabric(accelerator=device, devices=1, precision=args.precision)
    search = DARTSSearch(
        in_shape=(args.in_chans, args.size, args.size),
        num_classes=10,
        C=args.channels,
        layers=args.layers,
        partial_channels=args.partial_channels,
        order=int(args.order),
        implementation=args.implementation,
        channels_last=args.channels_last,
    )
    w_opt, a_opt = search.make_optimizers()
    _, w_opt, a_opt = fabric.setup(search, w_opt, a_opt)  # search now lives on the device, with Fabric's backward

    def batch():
        x = torch.randn(args.batch_size, args.in_chans, args.size, args.size, device=fabric.device)  # (B, C, H, W)
        return x, torch.randint(0, 10, (args.batch_size,), device=fabric.device)

    train, val = batch(), batch()
    cuda = fabric.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(fabric.device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    times = []
    for i in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize(fabric.device)
        start = time.perf_counter()
        with fabric.autocast():
            search.search_step(train, val, w_opt, a_opt)
        if cuda:
            torch.cuda.synchronize(fabric.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    if cuda:
        memory = f"peak CUDA memory {torch.cuda.max_memory_allocated(fabric.device) / 2**30:.2f} GiB"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        memory = f"peak RSS {peak:.2f} GiB ({rss_before:.2f} GiB before the first step)"
    config = (
        f"C={args.channels} layers={args.layers} batch={args.batch_size}+{args.batch_size} "
        f"{args.in_chans}x{args.size}x{args.size} k={args.partial_channels} {args.implementation}"
        f"{' channels_last' if args.channels_last and args.implementation == 'fast' else ''}"
    )
    threads = "" if cuda else f" threads={torch.get_num_threads()}"
    return (
        f"order {args.order}: {args.batch_size / step:8.1f} train img/s  ({step:.3f} s/step, median of {len(times)})  "
        f"{memory}  [{fabric.device.type}{threads} {fabric.strategy.precision.precision} {config}]"
    )


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.order != "both":
        print(measure(args), flush=True)
        return
    # one process per order: peak RSS cannot be reset within a process
    for order in ("1", "2"):
        subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--order", order], check=True)


if __name__ == "__main__":
    main()
