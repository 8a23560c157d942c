"""NAS-Bench-201 genotypes: one cell of 4 nodes and 6 edges, in the benchmark's own string form.

Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search",
ICLR 2020, Sec. 2.1 (and the NATS-Bench topology space, Dong et al., TPAMI 2021): node 0 is the
cell input, node 3 its output, and node j is the sum of one operation applied to every earlier
node i < j, so the cell has the 6 edges (0->1), (0->2), (1->2), (0->3), (1->3), (2->3), each
carrying one of 5 operations: 5^6 = 15,625 architectures.

The text form is the benchmark's (its API's ``query_index_by_arch`` keys), groups for target
nodes 1, 2, 3 joined by ``+``, each ``op~source``::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

It is parsed by splitting on ``+``, ``|`` and ``~`` (never ``eval``), after bounding its length,
and any deviation is reported with what a valid string looks like. The JSON form is
``{"nodes": [[["nor_conv_3x3", 0]], [[op, 0], [op, 1]], [[op, 0], [op, 1], [op, 2]]]}``, the
benchmark's ``str2lists`` layout; a ``genotype.json`` file (:meth:`NB201Genotype.save`) holds the
string as well, ``{"arch_str": "|...|", "nodes": [...]}``, and the two must agree.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from ...core import DlstratError, atomic_write_bytes, shorten
from ..base import genotype_file

__all__ = [
    "EDGES",
    "MAX_TEXT",
    "NB201_OPS",
    "NB201Genotype",
    "NB201GenotypeError",
    "edge_row",
    "sample_nb201",
]

# Column order of alpha and the benchmark's op indices (nats_bench; xautodl cell_operations.NAS_BENCH_201)
NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 4
# (source, target) per edge, in the order of the string and of alpha's rows: the benchmark's supernet
# sorts its edge keys "1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2", which is this order too
EDGES: tuple[tuple[int, int], ...] = tuple((s, t) for t in range(1, NUM_NODES) for s in range(t))
# the longest valid string is ~100 characters and the JSON form ~300; anything far longer is a
# mistake (or an attack on the parser), refused before any splitting
MAX_TEXT = 2000

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
_FORMAT_HELP = (
    "A NAS-Bench-201 architecture string has 3 groups joined by '+', one per node 1, 2, 3; group j lists "
    "one 'op~i' for every earlier node i = 0..j-1 in order, each between '|' characters, with op one of "
    f"{', '.join(NB201_OPS)}; for example {EXAMPLE}"
)


class NB201GenotypeError(DlstratError, ValueError):
    """A NAS-Bench-201 architecture string or dict that is not valid (a ValueError, printed by the CLI)."""


def edge_row(source: int, target: int) -> int:
    """Row of alpha (index into :data:`EDGES`) of the edge ``source -> target``."""
    return target * (target - 1) // 2 + source


@dataclass(frozen=True, repr=False)
class NB201Genotype:
    """One NAS-Bench-201 cell: the operation on each of the 6 edges, in :data:`EDGES` order.

    Example::

        g = NB201Genotype.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
        g.ops        # ('nor_conv_3x3', 'nor_conv_3x3', 'nor_conv_3x3', 'skip_connect', 'nor_conv_3x3', 'nor_conv_3x3')
        g.op(0, 3)   # 'skip_connect'
        str(g)       # the string again
    """

    ops: tuple[str, ...]

    def __post_init__(self):
        ops = self.ops
        if isinstance(ops, (str, bytes)) or not isinstance(ops, (list, tuple)):
            raise NB201GenotypeError(f"NB201Genotype takes a sequence of {len(EDGES)} op names, not {type(ops).__name__}. {_FORMAT_HELP}")
        if len(ops) != len(EDGES):
            raise NB201GenotypeError(f"NB201Genotype needs exactly {len(EDGES)} ops (edges {_edge_list()}), got {len(ops)}. {_FORMAT_HELP}")
        for (s, t), op in zip(EDGES, ops):
            if op not in NB201_OPS:
                raise NB201GenotypeError(f"unknown operation {_q(op, 40)} on edge {s}->{t}; the operations are {', '.join(NB201_OPS)}. {_FORMAT_HELP}")
        object.__setattr__(self, "ops", tuple(ops))  # frozen: normalise lists once

    # --- views -----------------------------------------------------------------------------------
    def op(self, source: int, target: int) -> str:
        return self.ops[edge_row(source, target)]

    def edges(self) -> Iterator[tuple[int, int, str]]:
        """``(source, target, op)`` for the 6 edges, in alpha's row order."""
        for (s, t), op in zip(EDGES, self.ops):
            yield s, t, op

    @property
    def nodes(self) -> tuple[tuple[tuple[str, int], ...], ...]:
        """Per target node 1..3, its ``(op, source)`` pairs: the benchmark's ``str2lists`` layout."""
        return tuple(tuple((self.op(s, t), s) for s in range(t)) for t in range(1, NUM_NODES))

    @property
    def connected(self) -> bool:
        """Whether some path from the cell's input (node 0) to its output (node 3) has no ``none`` edge.
        The benchmark's rule keeps ``none`` like any operation, so a cell can carry nothing (its output a
        constant: the benchmark's accuracy for such cells is chance)."""
        reached = {0}
        for t in range(1, NUM_NODES):
            if any(s in reached and self.op(s, t) != "none" for s in range(t)):
                reached.add(t)
        return NUM_NODES - 1 in reached

    def op_indices(self) -> list[int]:
        """The benchmark's op index per edge (0 none ... 4 avg_pool_3x3)."""
        return [NB201_OPS.index(op) for op in self.ops]

    # --- text and JSON ---------------------------------------------------------------------------
    def __str__(self) -> str:
        return "+".join("|" + "|".join(f"{op}~{s}" for op, s in node) + "|" for node in self.nodes)

    def __repr__(self) -> str:
        return f"NB201Genotype({str(self)!r})"

    def to_dict(self) -> dict[str, list]:
        """``{"nodes": [[[op, source], ...], ...]}``: plain lists, JSON-ready."""
        return {"nodes": [[[op, s] for op, s in node] for node in self.nodes]}

    @classmethod
    def from_dict(cls, d: Any) -> NB201Genotype:
        """The inverse of :meth:`to_dict`; ``{"arch_str": "|...|"}`` is accepted too, and both keys
        together (the :meth:`save` form) when they give the same cell."""
        if not isinstance(d, dict):
            raise NB201GenotypeError(f"a NAS-Bench-201 genotype dict must be a mapping with key 'nodes', not {type(d).__name__}. {_FORMAT_HELP}")
        keys = set(d)
        if not keys or not keys <= {"arch_str", "nodes"}:
            raise NB201GenotypeError(f"a NAS-Bench-201 genotype dict has exactly the key 'nodes' (or 'arch_str', or both), got {sorted(map(str, keys))[:8]}. {_FORMAT_HELP}")
        from_text = None
        if "arch_str" in keys:
            if not isinstance(d["arch_str"], str):
                raise NB201GenotypeError(f"'arch_str' must be a string, not {type(d['arch_str']).__name__}. {_FORMAT_HELP}")
            from_text = cls.parse(d["arch_str"])
            if keys == {"arch_str"}:
                return from_text
        nodes = d["nodes"]
        if not isinstance(nodes, (list, tuple)) or len(nodes) != NUM_NODES - 1:
            got = f"{len(nodes)} nodes" if isinstance(nodes, (list, tuple)) else type(nodes).__name__
            raise NB201GenotypeError(f"'nodes' must list the {NUM_NODES - 1} nodes 1, 2, 3, got {got}. {_FORMAT_HELP}")
        ops = {}
        for t, node in enumerate(nodes, start=1):
            if not isinstance(node, (list, tuple)) or len(node) != t:
                got = f"{len(node)} inputs" if isinstance(node, (list, tuple)) else type(node).__name__
                raise NB201GenotypeError(f"node {t} must list {t} [op, source] pairs (sources 0..{t - 1}), got {got}. {_FORMAT_HELP}")
            for k, pair in enumerate(node):
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)):
                    raise NB201GenotypeError(f"node {t}, input {k}: {_q(pair, 60)} is not an [op, source] pair. {_FORMAT_HELP}")
                op, s = pair
                if isinstance(s, bool) or not isinstance(s, int) or s != k:
                    raise NB201GenotypeError(f"node {t}, input {k}: source {_q(s, 20)} should be {k} (node {t} reads nodes 0..{t - 1} in order). {_FORMAT_HELP}")
                ops[(s, t)] = op
        genotype = cls(tuple(ops[e] for e in EDGES))
        if from_text is not None and from_text != genotype:
            raise NB201GenotypeError(f"'arch_str' {from_text} and 'nodes' {genotype} describe different cells; give one of them. {_FORMAT_HELP}")
        return genotype

    @classmethod
    def parse(cls, text: str) -> NB201Genotype:
        """The benchmark's architecture string, or the JSON of :meth:`to_dict` (text starting with ``{``)."""
        if not isinstance(text, str):
            raise NB201GenotypeError(f"a NAS-Bench-201 architecture must be given as text, not {type(text).__name__}. {_FORMAT_HELP}")
        if len(text) > MAX_TEXT:
            raise NB201GenotypeError(f"a NAS-Bench-201 architecture string of {len(text):,} characters is far too long (at most {MAX_TEXT:,} accepted). {_FORMAT_HELP}")
        text = text.strip()
        if not text:
            raise NB201GenotypeError(f"empty NAS-Bench-201 architecture string. {_FORMAT_HELP}")
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise NB201GenotypeError(f"NAS-Bench-201 genotype JSON is malformed ({e}). {_FORMAT_HELP}") from None
            except RecursionError:
                raise NB201GenotypeError(f"NAS-Bench-201 genotype JSON nests far deeper than a genotype does. {_FORMAT_HELP}") from None
            return cls.from_dict(data)
        groups = text.split("+")
        if len(groups) != NUM_NODES - 1:
            raise NB201GenotypeError(
                f"{_q(text, 120)} has {len(groups)} node group(s); a NAS-Bench-201 cell has {NUM_NODES} nodes, "
                f"so exactly {NUM_NODES - 1} groups (nodes 1, 2, 3) joined by '+'. {_FORMAT_HELP}"
            )
        ops: dict[tuple[int, int], str] = {}
        for t, group in enumerate(groups, start=1):
            if not (len(group) >= 2 and group.startswith("|") and group.endswith("|")):
                raise NB201GenotypeError(f"node {t}'s group {_q(group, 80)} must start and end with '|'. {_FORMAT_HELP}")
            items = group[1:-1].split("|")
            if len(items) != t:
                raise NB201GenotypeError(f"node {t} must have {t} input(s) (from nodes 0..{t - 1}), got {len(items)} in {_q(group, 80)}. {_FORMAT_HELP}")
            for k, item in enumerate(items):
                op, sep, index = item.partition("~")
                if not sep or "~" in index:
                    raise NB201GenotypeError(f"node {t}: {_q(item, 60)} is not of the form 'op~source'. {_FORMAT_HELP}")
                if op not in NB201_OPS:
                    raise NB201GenotypeError(f"node {t}: unknown operation {_q(op, 40)}; the operations are {', '.join(NB201_OPS)}. {_FORMAT_HELP}")
                if not (index.isascii() and index.isdigit()) or int(index) != k:
                    raise NB201GenotypeError(
                        f"node {t}: input {k} reads from {shorten(index, 20) or 'nothing'}, but it must read node {k} "
                        f"(node {t} takes nodes 0..{t - 1}, in order). {_FORMAT_HELP}"
                    )
                ops[(k, t)] = op
        return cls(tuple(ops[e] for e in EDGES))

    # --- files -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write ``genotype.json`` atomically: the benchmark's string and the node lists, one key a line."""
        body = {"arch_str": str(self), **self.to_dict()}
        atomic_write_bytes(path, ("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in body.items()) + "\n}\n").encode())

    @classmethod
    def load(cls, path: str | Path) -> NB201Genotype:
        """Read a file written by :meth:`save`, or any text :meth:`parse` accepts (``genotype.txt``: the string)."""
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > MAX_TEXT:
                raise NB201GenotypeError(f"cannot read genotype file {path}: {size:,} bytes is larger than a NAS-Bench-201 genotype can be (at most {MAX_TEXT:,})")
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise NB201GenotypeError(f"cannot read genotype file {path}: {shorten(str(e), 200)}") from None
        try:
            return cls.parse(text)
        except NB201GenotypeError as e:
            raise NB201GenotypeError(f"{path}: {e}") from None

    @classmethod
    def resolve(cls, value: Any) -> NB201Genotype:
        """What a user passes as ``--genotype``: a genotype, its string or JSON, a file, or a run directory
        holding ``genotype.json`` (a search) or ``genotype.txt`` (an nb201-net run)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value)
        if not isinstance(value, str):
            raise NB201GenotypeError(f"a NAS-Bench-201 genotype must be given as text, a file or a run directory, not {type(value).__name__}. {_FORMAT_HELP}")
        text = value.strip()
        if text.startswith(("|", "{")) or "~" in text:
            return cls.parse(text)
        path = genotype_file(text, ("genotype.json", "genotype.txt"))
        if path is not None:
            return cls.load(path)
        try:
            is_dir = Path(text).is_dir()
        except OSError:  # a name too long for the OS, and the like: not a directory
            is_dir = False
        if text.endswith((".json", ".txt")) or "/" in text or is_dir:
            raise NB201GenotypeError(f"genotype file {shorten(text, 200)} does not exist (a run directory must hold genotype.json or genotype.txt)")
        raise NB201GenotypeError(f"{_q(text, 120)} is neither a NAS-Bench-201 architecture string nor an existing genotype file or run directory. {_FORMAT_HELP}")

    # --- architecture weights --------------------------------------------------------------------
    @classmethod
    def from_alpha(cls, alpha: Any, operations: tuple[str, ...] = NB201_OPS, include_none: bool = True) -> NB201Genotype:
        """The op of largest weight on every edge of a (6, O) alpha (or softmax of it: same argmax).

        As the benchmark's DARTS code (``search_model_darts.py`` ``genotype``): a plain argmax
        per row with ``none`` *included*, ties going to the first op in ``operations``. With
        ``include_none=False`` ``none`` is never picked (a convention of some later methods).
        """
        w = torch.as_tensor(alpha).detach().to("cpu", torch.float64)  # (E, O)
        if w.dim() != 2 or w.shape != (len(EDGES), len(operations)):
            raise ValueError(f"alpha has shape {tuple(w.shape)}; a NAS-Bench-201 cell needs ({len(EDGES)}, {len(operations)}) = (edges, operations)")
        if not include_none and "none" in operations:
            if len(operations) == 1:
                raise ValueError("include_none=False leaves no operation to pick")
            w = w.clone()
            w[:, operations.index("none")] = float("-inf")
        return cls(tuple(operations[int(i)] for i in w.argmax(dim=1)))  # argmax: first of equal maxima


def sample_nb201(rng: random.Random, operations: tuple[str, ...] = NB201_OPS) -> NB201Genotype:
    """A genotype drawn uniformly from the 5^6 cells: one independent uniform op per edge."""
    if not isinstance(rng, random.Random):
        raise TypeError(f"sample_nb201 takes a random.Random (seed it for a fixed sequence), not {type(rng).__name__}")
    return NB201Genotype(tuple(rng.choice(operations) for _ in EDGES))


def _q(value: Any, limit: int) -> str:
    """A user's value for an error message: quoted if text, cut to ``limit`` characters."""
    return shorten(repr(value), limit)


def _edge_list() -> str:
    return ", ".join(f"{s}->{t}" for s, t in EDGES)


# --- cells with published numbers (sources in tests/test_spaces.py) --------------------------------
ALL_SKIP = NB201Genotype(("skip_connect",) * 6)
ALL_CONV3X3 = NB201Genotype(("nor_conv_3x3",) * 6)
# benchmark index 9930; the maintainer calls it "the best architecture" on CIFAR-100 (AutoDL-Projects #103)
BEST_CIFAR100 = NB201Genotype.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
