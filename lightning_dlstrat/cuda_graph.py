"""The whole DARTS search step as one captured CUDA graph, replayed with static input buffers.

DARTS (Liu, Simonyan, Yang, ICLR 2019) spends a search step in thousands of small kernels: two to
four forward passes and backward passes of a supernet whose per-operation tensors are tiny at
batch 64. On a GPU the time then goes to launching kernels, not running them. A CUDA graph
records the step's kernels once and replays them with one launch (PyTorch ``torch.cuda.CUDAGraph``;
the "CUDA Graphs" section of the PyTorch CUDA semantics notes).

:class:`GraphedSearchStep` wraps :meth:`DARTSSearch.search_step
<lightning_dlstrat.trainers.darts_search.DARTSSearch.search_step>` (architecture step and weight
step, both optimisers included) so that

- the first ``warmup`` steps run eagerly (on a side stream on CUDA, as capture requires: lazily
  created optimiser state such as SGD momentum buffers and Adam moments exists by then);
- then the step is captured once, reading its batch from static buffers, and every later call
  copies the batch in and replays the graph;
- the graph is captured again when anything it froze changes: the learning rates (the cosine
  schedule changes the weight lr every epoch, and the second-order virtual step reads it as a
  Python number), ``update_arch``, or the batch shapes.

What a captured step must not do, and how this one avoids it: no host synchronisation (no
``.item()``, no CPU-side value of a GPU tensor: the step uses none without an fp16 GradScaler,
whose scale ``DARTSSearch._loss_scale`` reads on the host, so fp16 is refused; use bf16 or
fp32); no optimiser state on the host (Adam is switched to ``capturable=True``, which keeps its
step count on the device; SGD has no step count); no allocation whose address changes between
replays for tensors the host reads (the returned loss and logits are the graph's static
outputs, overwritten by the next replay: clone them to keep them); a single process (no DDP
collectives inside the graph).

On CPU (or with ``enabled=False``) the same object runs the same step eagerly through the same
static buffers, which is how the CPU tests check that the capture-ready path computes exactly
the eager step.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch

__all__ = ["GraphedSearchStep", "make_capturable"]

Batch = tuple[torch.Tensor, torch.Tensor]  # (x (B, C, H, W), y (B,))


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Switch an optimiser that supports it (Adam, AdamW, ...) to ``capturable=True`` in place.

    Capturable optimisers keep their step counters on the parameters' device, so ``step()``
    needs no host value; state created eagerly before the switch is moved there. Optimisers
    without a step counter (SGD) are capturable as they are. Needs CUDA (PyTorch supports
    ``capturable`` on accelerators only).
    """
    inner = getattr(optimizer, "optimizer", optimizer)  # Fabric / Lightning wrap the optimiser
    if "capturable" not in inner.defaults:
        return
    inner.defaults["capturable"] = True
    for group in inner.param_groups:
        group["capturable"] = True
        for p in group["params"]:
            state = inner.state.get(p, {})
            if "step" in state and torch.is_tensor(state["step"]):
                state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


def _learning_rates(*optimizers) -> tuple[float, ...]:
    """Every param group's lr, as Python numbers: what a captured step has frozen."""
    out = []
    for opt in optimizers:
        for group in opt.param_groups:
            lr = group["lr"]
            out.append(float(lr) if not torch.is_tensor(lr) else float(lr.detach().cpu()))
    return tuple(out)


class GraphedSearchStep:
    """``step(train, val)`` = ``search.search_step(train, val, w_opt, a_opt, update_arch)``, graphed on CUDA.

    Example (one GPU, bf16 or fp32)::

        fabric = L.Fabric(accelerator="cuda", devices=1, precision="bf16-mixed")
        search = DARTSSearch(C=16, layers=8)
        w_opt, a_opt = search.make_optimizers()
        search, w_opt, a_opt = fabric.setup(search, w_opt, a_opt)
        step = GraphedSearchStep(search.module, w_opt, a_opt, autocast=fabric.autocast)
        for train, val in batches:
            loss, logits = step(train, val)  # eager for `warmup` steps, then replayed

    Returns (loss, logits) of the weight step; on a replayed step they are the graph's static
    outputs (valid until the next call).
    """

    def __init__(
        self,
        search,  # DARTSSearch (the LightningModule itself, not Fabric's wrapper)
        w_opt: torch.optim.Optimizer,
        a_opt: torch.optim.Optimizer,
        warmup: int = 3,  # eager steps before the first capture (at least 1: optimiser state)
        enabled: bool = True,  # False: always eager (the switch to turn graphs off)
        autocast: Callable[[], ContextManager] | None = None,  # e.g. fabric.autocast
    ):
        search = getattr(search, "module", search)  # accept Fabric's _FabricModule too
        self.search, self.w_opt, self.a_opt = search, w_opt, a_opt
        self.warmup = max(1, warmup)
        self.autocast = autocast or contextlib.nullcontext
        self.device = next(search.parameters()).device
        self.graphs_on = enabled and self.device.type == "cuda"
        if self.graphs_on:
            if search._loss_scale() != 1.0 or self._has_scaler():
                raise ValueError(
                    "a captured search step cannot use an fp16 GradScaler (its scale is read on the host "
                    "every step); use precision='bf16-mixed' or '32-true', or enabled=False"
                )
            make_capturable(a_opt)
            make_capturable(w_opt)
        self.calls = 0  # steps taken through this object
        self.captures = 0  # graphs captured so far (a new one whenever the key changes)
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, torch.Tensor]]] = {}  # per (update_arch, shapes)
        self._lrs: tuple[float, ...] | None = None  # the learning rates the graphs froze
        self._buffer_sets: dict[tuple, dict[str, torch.Tensor]] = {}  # static batch buffers per batch shape
        self._static: dict[str, torch.Tensor] = {}  # the current batch's

    def _has_scaler(self) -> bool:
        s = self.search
        plugin = s._fabric.strategy.precision if s._fabric is not None else (s.trainer.precision_plugin if s._trainer is not None else None)
        return getattr(plugin, "scaler", None) is not None

    # --- the step on static buffers: what is captured, and what runs eagerly on CPU --------------
    def _fill(self, train: Batch, val: Batch) -> tuple:
        """Copy the batch into the static buffers of its shapes; return the shapes' signature.

        One set of buffers per signature (a shorter last batch of an epoch gets its own), so a
        graph always reads the buffers it was captured with.
        """
        tensors = {"x_train": train[0], "y_train": train[1], "x_val": val[0], "y_val": val[1]}
        signature = tuple((n, tuple(t.shape), t.dtype) for n, t in tensors.items())
        if signature not in self._buffer_sets:
            self._buffer_sets[signature] = {n: torch.empty_like(t, device=self.device) for n, t in tensors.items()}
        self._static = self._buffer_sets[signature]
        for name, t in tensors.items():
            self._static[name].copy_(t, non_blocking=True)
        return signature

    def _step_on_static(self, update_arch: bool) -> tuple[torch.Tensor, torch.Tensor]:
        s = self._static
        with self.autocast():
            return self.search.search_step((s["x_train"], s["y_train"]), (s["x_val"], s["y_val"]), self.w_opt, self.a_opt, update_arch)

    def __call__(self, train: Batch, val: Batch, update_arch: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        signature = self._fill(train, val)
        self.calls += 1
        if not self.graphs_on:
            return self._step_on_static(update_arch)
        if self.calls <= self.warmup:
            return self._eager_side_stream(update_arch)
        lrs = _learning_rates(self.w_opt, self.a_opt)
        if lrs != self._lrs:  # a new lr: every graph froze the old one
            self._graphs.clear()
            self._lrs = lrs
        key = (update_arch, signature)
        if key not in self._graphs:
            self._graphs[key] = self._capture(update_arch)
        graph, out = self._graphs[key]
        graph.replay()  # capture only records the kernels: this runs the step
        return out

    def _eager_side_stream(self, update_arch: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """An eager step on a side stream: the warm-up ``torch.cuda.graph`` wants before capture."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            out = self._step_on_static(update_arch)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return out

    def _capture(self, update_arch: bool) -> tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, torch.Tensor]]:
        """Record one step (without running it). Its outputs are the graph's static tensors."""
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        # the step sets every .grad to None at its start and end, so no gradient of an eager
        # step leaks into the graph, and the graph's gradients live only inside it
        with torch.cuda.graph(graph):
            out = self._step_on_static(update_arch)
        self.captures += 1
        return graph, out
