"""Latency lookup tables: every candidate operation timed at every position of the evaluation
network a search derives, on the device and runtime the network will run on.

FBNet (Wu et al., CVPR 2019) and ProxylessNAS (Cai et al., ICLR 2019) predict a network's latency
as the sum of its operations' latencies, measured alone at their positions; this module builds
such a table for a search space's evaluation network (the retrain recipe's network for the
dataset: its channels, cells, strides and input size), then checks the sum against whole-network
measurements. What the table holds:

- ``cells[cell type][i][edge][op]``: median milliseconds of operation ``op`` on edge ``edge`` of
  the ``i``-th cell of that type (its channels, height, width and stride), batch and threads as keyed;
- ``fixed_ms``: everything else (stem, the cells' preprocessing, the sums and concatenations, the
  NB201 residual blocks, pooling and classifier), estimated as the median over ``calibrate``
  random genotypes of (measured network - sum of its operations): so the table's prediction is
  right on average for those, and its error on *other* genotypes (:func:`prediction_error`) says
  what the sum misses (fusion, memory traffic, Python overhead per module);
- ``key``: what the numbers are valid for (space, network arguments, input shape, device and its
  name, runtime, batch, threads, library versions). A table is reused only for the same key.

Tables are data: JSON, versioned (``format``), cached under ``$XDG_CACHE_HOME/lightning_dlstrat/latency``
(or ``~/.cache``) by the hash of their key, and read with bounded sizes. The differentiable
expected latency a search optimises is :mod:`lightning_dlstrat.methods.latency_budget`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .core import DlstratError, atomic_write_json, load_json
from .cost import device_name, measure_latency

FORMAT = 1  # the table file's version; another is refused with a message
MAX_TABLE_BYTES = 8 * 2**20  # a table is a few kB to a few hundred kB
MAX_CELLS, MAX_EDGES, MAX_OPS = 256, 64, 32  # bounds checked before a read table is used
ROUNDS = 3  # each timing is the median of this many interleaved rounds (time_in_rounds)


@dataclass
class LatencyTable:
    space: str
    key: dict[str, Any]  # what the numbers are valid for (see the module docstring)
    primitives: list[str]  # the operations, in alpha's column order
    cells: dict[str, list[list[list[float]]]]  # cell type -> cell -> edge -> ms per primitive
    rule: dict[str, Any]  # the space's genotype rule (SearchSpace.latency_rule)
    fixed_ms: float = 0.0
    calibration: dict[str, Any] = field(default_factory=dict)  # the genotypes fixed_ms was estimated from, and the spread
    format: int = FORMAT

    # --- prediction ------------------------------------------------------------------------------
    def ops_ms(self, space, genotype) -> float:
        """The sum of the table's entries for the operations ``genotype`` keeps, over every cell of the network."""
        chosen = space.chosen_edges(genotype)
        total = 0.0
        for cell_type, cells in self.cells.items():
            for cell in cells:
                total += sum(cell[e][self.primitives.index(op)] for e, op in chosen[cell_type])
        return total

    def predict(self, space, genotype) -> float:
        """Predicted milliseconds of the evaluation network of ``genotype``: fixed cost + its operations."""
        return self.fixed_ms + self.ops_ms(space, genotype)

    def fastest_ms(self) -> float:
        """The prediction for the fastest network the space's genotype rule (``rule``) can derive without ``none``
        (a cell of ``none`` edges does not connect): every cell of a type shares its choices, so per type each
        edge's cheapest allowed operation summed over the cells, and (``top_k``) each node's ``k`` cheapest
        edges. A budget below it cannot be met by a network that learns."""
        total = self.fixed_ms
        allowed = [i for i, op in enumerate(self.primitives) if op not in self.never_derived()]
        for cells in self.cells.values():
            per_edge = [min(sum(cell[e][o] for cell in cells) for o in allowed) for e in range(len(cells[0]))]
            if self.rule["kind"] == "all":
                total += sum(per_edge)
            else:
                total += sum(sum(sorted(per_edge[e] for e in node)[: self.rule["k"]]) for node in self.rule["nodes"])
        return total

    def never_derived(self) -> set[str]:
        """Operations a budgeted network never gets: the rule's excluded ones, and ``none`` (it disconnects a cell)."""
        return set(self.rule.get("exclude", ())) | {"none"}

    def verdict(self, predicted: float, target: float) -> str:
        """What a search under a ``target`` budget ended with, for its report: met, exceeded by how much, or
        a budget below the fastest derivable network."""
        fastest = self.fastest_ms()
        if target < fastest:
            return f"budget {target:g} ms is below the fastest network this space derives ({fastest:.3f} ms predicted): no search can meet it"
        if predicted <= target:
            return f"budget {target:g} ms met (predicted)"
        return (f"budget {target:g} ms exceeded by {100 * (predicted / target - 1):.1f} % (predicted); --model.latency_project=true (the default) "
                f"swaps in cheaper operations until it fits, a longer search or a larger --model.latency_lr gets the search itself closer")

    # --- files -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        atomic_write_json(path, asdict(self))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        if not path.is_file():
            raise DlstratError(f"latency table {path} does not exist; make one with `dlstrat latency profile --space SPACE --data DATA`")
        if path.stat().st_size > MAX_TABLE_BYTES:
            raise DlstratError(f"latency table {path} is {path.stat().st_size:,} bytes, more than a table can be ({MAX_TABLE_BYTES:,})")
        return cls.from_dict(load_json(path.read_bytes(), f"latency table {path}"), str(path))

    @classmethod
    def from_dict(cls, d: Any, where: str = "latency table") -> LatencyTable:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DlstratError(f"{where} is not a latency table of format {FORMAT} (made by another version?); profile again with `dlstrat latency profile`")
        try:
            prims, cells = list(d["primitives"]), d["cells"]
            if not (0 < len(prims) <= MAX_OPS) or len(cells) > 8:
                raise ValueError("sizes")
            for rows in cells.values():
                if len(rows) > MAX_CELLS or any(len(edges) > MAX_EDGES or any(len(ops) != len(prims) for ops in edges) for edges in rows):
                    raise ValueError("sizes")
            table = cls(space=str(d["space"]), key=dict(d["key"]), primitives=[str(p) for p in prims],
                        cells={str(k): [[[float(v) for v in ops] for ops in edges] for edges in rows] for k, rows in cells.items()},
                        rule=dict(d["rule"]), fixed_ms=float(d["fixed_ms"]), calibration=dict(d.get("calibration") or {}))
        except (KeyError, TypeError, ValueError):
            raise DlstratError(f"{where} is damaged or not a latency table (its primitives, cells or sizes do not fit together)") from None
        return table


# --- measuring -----------------------------------------------------------------------------------
def time_network(net: nn.Module, in_shape: tuple[int, ...], *, device: str = "cpu", runtime: str = "torch", batch: int = 1,
                 threads: int | None = None, repeats: int = 50) -> float:
    """Median milliseconds of a forward pass of ``net`` (eval mode) on a batch of ``batch`` inputs, in ``runtime``."""
    net = net.eval()
    if runtime == "torch":
        return measure_latency(net, in_shape, batch=batch, device=device, threads=threads, repeats=repeats)["median_ms"]
    if runtime == "onnxruntime":  # exported, then timed: one round of time_in_rounds
        return time_in_rounds({"net": (net, in_shape)}, 1, runtime="onnxruntime", batch=batch, threads=threads, repeats=repeats)["net"]
    raise DlstratError(f"--runtime must be torch or onnxruntime, not {runtime!r}")


def time_in_rounds(nets: dict[Any, tuple[nn.Module, tuple[int, ...]]], rounds: int = ROUNDS, **kw: Any) -> dict[Any, float]:
    """``{name: median milliseconds}`` of each ``(module, in_shape)``, timed in ``rounds`` rounds over all of them in
    turn (A B C ... A B C ...), the median of the rounds kept (each a :func:`time_network`, ``kw`` its options).

    Timing each thing once, one after another, let a slow spell of a shared machine land on whatever was timed
    during it: a DARTS table profiled that way on this project's 2-core VM had a negative fixed cost (its
    operations summed to more than whole networks), and the same network measured 1.5-2x apart minutes apart.
    Interleaved, a slow spell costs every entry one round out of ``rounds``, and the median drops it."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    times: dict[Any, list[float]] = {name: [] for name in nets}
    if kw.get("runtime", "torch") != "onnxruntime":
        for _ in range(rounds):
            for name, (module, in_shape) in nets.items():
                times[name].append(time_network(module, in_shape, **kw))
        return {name: statistics.median(t) for name, t in times.items()}
    # onnxruntime: each network exported once, its file timed in every round
    opts = {k: kw[k] for k in ("batch", "threads", "repeats") if k in kw}
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: (onnx_file(module.eval(), in_shape, opts.get("batch", 1), Path(tmp) / f"{i}.onnx"), in_shape)
                 for i, (name, (module, in_shape)) in enumerate(nets.items())}
        for _ in range(rounds):
            for name, (path, in_shape) in files.items():
                times[name].append(measure_latency(path, in_shape, runtime="onnxruntime", **opts)["median_ms"])
    return {name: statistics.median(t) for name, t in times.items()}


def onnx_file(net: nn.Module, in_shape: tuple[int, ...], batch: int, path: Path) -> Path:
    """``net`` exported to ONNX (torch.export, then the dynamo exporter) for a batch of ``batch``."""
    import warnings

    x = torch.zeros(batch, *in_shape)  # (B, C, H, W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(torch.export.export(net.eval().cpu(), (x,)), dynamo=True, verbose=False)
    program.save(path)
    return path


def profile(
    space, build: Callable[[Any], nn.Module], in_shape: tuple[int, ...], *, network: dict[str, Any], device: str = "cpu",
    runtime: str = "torch", batch: int = 1, threads: int | None = None, calibrate: int = 10, seed: int = 0, repeats: int = 50,
    rounds: int = ROUNDS, log: Callable[[str], None] = lambda _: None,
) -> LatencyTable:
    """Time every operation of ``space`` at every position of its evaluation network, and the fixed cost.

    ``build(genotype)``: the evaluation network of a genotype (the retrain recipe's, for the data);
    ``network``: its arguments, for the key; ``in_shape``: one input (C, H, W). Every entry is the median
    of ``rounds`` interleaved rounds (:func:`time_in_rounds`), the operations' and the calibration networks'.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DlstratError("--device cuda: no CUDA device is available here; profile on the machine the network will run on")
    if runtime == "onnxruntime" and device != "cpu":
        raise DlstratError("--runtime onnxruntime is timed on the CPU execution provider; give --device cpu")
    threads = threads or torch.get_num_threads()
    rng = random.Random(seed)
    probe = build(space.sample(rng))
    positions = space.latency_positions(probe, in_shape)  # {cell type: [[(C, H, W, stride) per edge] per cell]}
    prims = list(space.operations)
    wanted = sorted({(op, *pos) for rows in positions.values() for edges in rows for pos in edges for op in prims})  # (op, C, H, W, stride)
    log(f"timing {len(prims)} operations at {len(wanted) // len(prims)} distinct positions ({device}, {runtime}, batch {batch}, {threads} thread(s), "
        f"{rounds} rounds)")
    timing = dict(device=device, runtime=runtime, batch=batch, threads=threads, repeats=repeats)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # the operations (each distinct position once) and the calibration networks in the same rounds, so a
        # machine that drifts between them cannot bias the fixed cost, their difference
        genotypes = [space.sample(rng) for _ in range(calibrate)]
        entries = {(op, c, h, w, stride): (space.latency_op(op, c, stride).to(device), (c, h, w)) for op, c, h, w, stride in wanted}
        entries.update({("network", i): (build(g).to(device), in_shape) for i, g in enumerate(genotypes)})
        timed = time_in_rounds(entries, rounds, **timing)
        cells = {cell: [[[timed[(op, *pos)] for op in prims] for pos in edges] for edges in rows] for cell, rows in positions.items()}
        table = LatencyTable(space=space.name, key={}, primitives=prims, cells=cells, rule=space.latency_rule())
        # the fixed cost: what whole networks take beyond their operations, median over random genotypes
        residuals = [timed[("network", i)] - table.ops_ms(space, g) for i, g in enumerate(genotypes)]
    finally:
        torch.set_num_threads(saved)
    table.fixed_ms = statistics.median(residuals)
    table.calibration = {"genotypes": [str(g) for g in genotypes], "residual_ms": residuals, "seed": seed, "rounds": rounds}
    table.key = table_key(space.name, network, in_shape, device, runtime, batch, threads)
    return table


def table_key(space: str, network: dict[str, Any], in_shape, device: str, runtime: str, batch: int, threads: int) -> dict[str, Any]:
    versions = {"torch": torch.__version__}
    if runtime == "onnxruntime":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return {"space": space, "network": {k: network[k] for k in sorted(network)}, "in_shape": list(in_shape), "device": device,
            "device_name": device_name(device), "runtime": runtime, "batch": batch, "threads": threads, "versions": versions}


def prediction_error(table: LatencyTable, space, build: Callable[[Any], nn.Module], in_shape, samples: int = 50, seed: int = 1, repeats: int = 50,
                     rounds: int = ROUNDS) -> dict[str, Any]:
    """The table's prediction against measurement on ``samples`` random genotypes other than the calibration's,
    each measured as the median of ``rounds`` interleaved rounds: each (genotype, predicted, measured, error %),
    and the median and worst |error %|."""
    key = table.key
    rng = random.Random(seed + 10_000)  # apart from the calibration's draws
    genotypes = [space.sample(rng) for _ in range(samples)]
    saved = torch.get_num_threads()
    torch.set_num_threads(key["threads"])
    try:
        measured = time_in_rounds({i: (build(g).to(key["device"]), tuple(in_shape)) for i, g in enumerate(genotypes)}, rounds,
                                  device=key["device"], runtime=key["runtime"], batch=key["batch"], threads=key["threads"], repeats=repeats)
    finally:
        torch.set_num_threads(saved)
    rows = []
    for i, genotype in enumerate(genotypes):
        predicted = table.predict(space, genotype)
        rows.append({"genotype": str(genotype), "predicted_ms": predicted, "measured_ms": measured[i], "error_pct": 100 * (predicted - measured[i]) / measured[i]})
    errors = [abs(r["error_pct"]) for r in rows]
    return {"samples": rows, "median_abs_error_pct": statistics.median(errors), "worst_abs_error_pct": max(errors), "key": key}


# --- the cache -----------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where profiled tables are kept: ``$XDG_CACHE_HOME/lightning_dlstrat/latency`` (``~/.cache`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lightning_dlstrat" / "latency"


def shipped_dir() -> Path:
    """The tables the package ships (measured on the machine that built it): used when their key matches."""
    return Path(__file__).resolve().parent / "assets" / "latency"


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def find_table(key: dict[str, Any]) -> Path | None:
    """A cached or shipped table for exactly ``key`` (space, network, device and its name, runtime, batch, threads, versions)."""
    name = f"{key['space']}-{key_hash(key)}.json"
    for folder in (cache_dir(), shipped_dir()):
        if (folder / name).is_file():
            return folder / name
    return None


def cached_path(key: dict[str, Any]) -> Path:
    return cache_dir() / f"{key['space']}-{key_hash(key)}.json"
