"""Cost of the second-order DARTS hypergradient: exact mixed Hessian-vector product vs finite differences.

Times :meth:`lightning_dlstrat.trainers.darts_search.DARTSSearch.architecture_gradient` with
``order=2`` (DARTS, Liu et al. ICLR 2019, eq. 7-8), ``hessian="fd"`` (the paper's central
differences: two extra forward + alpha-backward passes at w +- eps v) against ``hessian="exact"``
(one forward, a weight backward with ``create_graph`` and a second backward to alpha), on one
module and the same random batches, alternating fd, exact, fd, exact, ... in one process. Each
pair's ratio (exact / fd) cancels the drift of a shared machine: its median, min and max are
the figures to quote; the medians of the absolute times, date and load average are context.

    PYTHONPATH=. python benchmarks/darts_hessian.py --preset digits
    PYTHONPATH=. python benchmarks/darts_hessian.py --preset cifar10 --batch-size 16 --pairs 3
    PYTHONPATH=. python benchmarks/darts_hessian.py --device cuda --preset cifar10

The architecture step alone is timed (the weight step is the same for both); peak memory is
reported on CUDA only (``max_memory_allocated`` over the memory allocated before the call).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

PRESETS = {
    "cifar10": dict(channels=16, layers=8, batch_size=64, size=32, in_chans=3),
    "digits": dict(channels=8, layers=5, batch_size=64, size=8, in_chans=1),
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="digits")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--channels", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--implementation", choices=["fast", "reference"], default="fast")
    p.add_argument("--space", default="darts")
    p.add_argument("--pairs", type=int, default=5, help="measured (fd, exact) pairs, after one warm-up pair")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)

    import torch

    from lightning_dlstrat.trainers.darts_search import DARTSSearch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    space_args = dict(layers=args.layers) if args.space == "darts" else dict(N=max(1, args.layers // 3))
    search = DARTSSearch(
        in_shape=(args.in_chans, args.size, args.size), num_classes=10, C=args.channels, space=args.space,
        order=2, implementation=args.implementation, **space_args,
    ).to(device)
    w_opt, a_opt = search.make_optimizers()

    def batch():
        x = torch.randn(args.batch_size, args.in_chans, args.size, args.size, device=device)  # (B, C, H, W)
        return x, torch.randint(0, 10, (args.batch_size,), device=device)  # (B,)

    train, val = batch(), batch()
    search.search_step(train, val, w_opt, a_opt, update_arch=False)  # momentum buffers, as in a search

    def timed(hessian: str) -> tuple[float, float]:
        search.hparams.hessian = hessian
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        search.architecture_gradient(train, val, w_opt)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        else:
            peak = float("nan")
        return time.perf_counter() - start, peak

    times = {"fd": [], "exact": []}
    peaks = {"fd": [], "exact": []}
    for i in range(args.pairs + 1):
        for hessian in ("fd", "exact"):
            seconds, peak = timed(hessian)
            if i > 0:  # the first pair warms up allocators and kernels
                times[hessian].append(seconds)
                peaks[hessian].append(peak)
    ratios = [e / f for f, e in zip(times["fd"], times["exact"])]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, load {load}, torch {torch.__version__}, {device}, threads {args.threads}")
    print(
        f"space={args.space} {args.implementation} {args.in_chans}x{args.size}x{args.size} C={args.channels} "
        f"layers={args.layers} batch={args.batch_size}+{args.batch_size}, {args.pairs} pairs"
    )
    for hessian in ("fd", "exact"):
        mem = f", peak +{max(peaks[hessian]):.0f} MiB" if device.type == "cuda" else ""
        print(f"  {hessian:5s} architecture step: median {statistics.median(times[hessian]) * 1e3:.1f} ms{mem}")
    print(f"  exact / fd time ratio: median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
