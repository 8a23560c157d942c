"""What a network costs to run: parameters, FLOPs, and latency measured on this machine.

- :func:`count_params`: parameters, without the heads a network drops at test time (DARTS's
  auxiliary head), as the papers count them.
- :func:`count_flops`: floating-point operations of one forward pass, counted by torch's own
  ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2; ``macs`` = flops / 2, the
  "multi-adds" of the NAS papers).
- :func:`measure_latency`: the median wall time of a forward pass, after warm-up, on the CPU or a
  CUDA device (CUDA events), in eager torch or onnxruntime, with the device, runtime, batch and
  threads it was measured with. A number without those is meaningless, so they travel together.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn


def count_params(net: nn.Module) -> int:
    """Parameters used at test time: all but the auxiliary head's (dropped after training, as the DARTS paper counts)."""
    return sum(p.numel() for name, p in net.named_parameters() if not name.startswith("auxiliary_head."))


@torch.no_grad()
def count_flops(net: nn.Module, input_size: tuple[int, ...]) -> int:
    """FLOPs of one forward pass of ``net`` (eval mode) on one input of ``input_size`` (C, H, W)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = net.training
    net.eval()
    x = torch.zeros(1, *input_size, device=next(net.parameters()).device)  # (1, C, H, W)
    with FlopCounterMode(display=False) as counter:
        net(x)
    net.train(was_training)
    return int(counter.get_total_flops())


def device_name(device: str = "cpu") -> str:
    """The processor a latency was measured on, in words (the CPU's model name, or the CUDA device's)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


@torch.no_grad()
def measure_latency(
    net: nn.Module | str | Path, input_size: tuple[int, ...], *, batch: int = 1, device: str = "cpu", runtime: str = "torch",
    warmup: int = 10, repeats: int = 50, threads: int | None = None,
) -> dict[str, Any]:
    """Median milliseconds of one forward pass of a batch of ``batch`` inputs of ``input_size``.

    ``runtime``: "torch" (``net`` an ``nn.Module``, eager, eval mode) or "onnxruntime" (``net`` the
    path of an ONNX file; CPU execution provider). ``threads``: intra-op threads (default: torch's
    current setting). The result says what was measured: device, runtime, batch, threads,
    repeats, median and interquartile range, and the library versions.
    """
    threads = threads or torch.get_num_threads()
    x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))  # (B, C, H, W)
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(net), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        run = lambda: session.run(None, feed)  # noqa: E731
        version = {"onnxruntime": ort.__version__}
        device = "cpu"
    elif runtime == "torch":
        net = net.eval().to(device)
        x = x.to(device)
        run = lambda: net(x)  # noqa: E731
        version = {"torch": torch.__version__}
    else:
        raise ValueError(f"runtime must be torch or onnxruntime, not {runtime!r}")
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = _time(run, device, warmup, repeats)
    finally:
        torch.set_num_threads(saved)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "median_ms": round(statistics.median(times), 4), "iqr_ms": [round(q[0], 4), round(q[2], 4)],
        "device": device, "device_name": device_name(device), "runtime": runtime, "batch": batch, "threads": threads,
        "repeats": repeats, "input_size": list(input_size), "versions": version, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def _time(run, device: str, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls after ``warmup`` calls: CUDA events on a GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return times
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000)
    return times
