"""DARTS genotypes: the discrete cell architectures a search produces and an evaluation network is built from.

A genotype describes two cells (Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search",
ICLR 2019, Sec. 2.1 and 2.4): a *normal* cell that keeps the resolution and a *reduce* cell that
halves it. Each cell has two inputs (the outputs of the two previous cells, states 0 and 1) and
``steps`` intermediate nodes (states 2, 3, ...); every node sums two operations applied to earlier
states, listed as ``(op, input)`` pairs, two per node; the cell's output concatenates the states in
``*_concat``. The layout is the one of quark0/darts ``cnn/genotypes.py``::

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5],
             reduce=[('max_pool_3x3', 0), ...], reduce_concat=[2, 3, 4, 5])

so genotypes printed by the reference code (and by PC-DARTS and most forks) paste in unchanged.
Text is parsed, never ``eval``-ed: JSON, or the string above read with :func:`ast.parse` and a
walker that accepts only literals and ``range(a, b)``.
"""

from __future__ import annotations

import ast
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ...core import atomic_write_bytes, shorten
from ..base import genotype_file
from .ops import OPS, PRIMITIVES

Pair = tuple[str, int]
FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
# Bounds checked before anything from text is expanded: genotypes come from files, flags and
# downloaded configs, and ``range(0, 200000000)`` must not cost gigabytes before it is refused.
MAX_TEXT = 64_000  # characters of genotype text (a DARTS cell prints in about 400)
MAX_PAIRS = 64  # (op, input) pairs per cell: 32 intermediate nodes (DARTS has 4)
MAX_RANGE = 256  # elements a range(...) may expand to


@dataclass(frozen=True, repr=False)
class Genotype:
    """Two DARTS cells, validated on construction (lists and ``range`` are accepted and frozen to tuples).

    Interchangeable with the reference ``namedtuple('Genotype', 'normal normal_concat reduce
    reduce_concat')``: same field names and order, unpacks into the four fields, prints the same.
    """

    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Pair, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self):
        for cell in ("normal", "reduce"):
            pairs = _check_cell(cell, getattr(self, cell))
            concat = _check_concat(f"{cell}_concat", getattr(self, f"{cell}_concat"), steps=len(pairs) // 2)
            object.__setattr__(self, cell, pairs)  # frozen dataclass: set the normalised values once
            object.__setattr__(self, f"{cell}_concat", concat)

    # --- namedtuple compatibility ----------------------------------------------------------------
    _fields = FIELDS

    def __iter__(self) -> Iterator:
        return iter(getattr(self, f) for f in FIELDS)

    def __str__(self) -> str:
        def pairs(ps):
            return "[" + ", ".join(f"({op!r}, {i})" for op, i in ps) + "]"

        return (
            f"Genotype(normal={pairs(self.normal)}, normal_concat={list(self.normal_concat)}, "
            f"reduce={pairs(self.reduce)}, reduce_concat={list(self.reduce_concat)})"
        )

    __repr__ = __str__

    @property
    def steps(self) -> int:
        """Intermediate nodes of the normal cell (4 in DARTS)."""
        return len(self.normal) // 2

    # --- conversions -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, list]:
        """Plain lists only, JSON-ready: ``{"normal": [["sep_conv_3x3", 0], ...], "normal_concat": [2, 3, 4, 5], ...}``."""
        return {
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Genotype:
        if not isinstance(d, dict):
            raise ValueError(f"a genotype must be a mapping with keys {', '.join(FIELDS)}, not {type(d).__name__}")
        missing = [k for k in FIELDS if k not in d]
        extra = [k for k in d if k not in FIELDS]
        if missing or extra:
            problems = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(map(str, extra))}"] if extra else [])
            raise ValueError(f"genotype keys: {'; '.join(problems)} (expected exactly {', '.join(FIELDS)})")
        return cls(*(d[k] for k in FIELDS))

    @classmethod
    def coerce(cls, value: Any) -> Genotype:
        """The one genotype codec: a Genotype, its JSON form (:meth:`to_dict`), a built-in name or genotype text.

        Never a file path: networks built from a downloaded config.json come through here, and a
        string there must not make the loader read local files (:func:`resolve_genotype` does
        that, for what a user types).
        """
        if isinstance(value, Genotype):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value)
        if isinstance(value, str):
            if value.strip().upper() in GENOTYPES:
                return GENOTYPES[value.strip().upper()]
            return cls.parse(value)
        raise ValueError(f"a genotype must be a Genotype, its JSON mapping, a built-in name or genotype text, not {type(value).__name__}")

    @classmethod
    def parse(cls, text: str) -> Genotype:
        """Parse JSON (see :meth:`to_dict`) or the reference string form ``Genotype(normal=[...], ...)``.

        ``NAME = Genotype(...)``, as written in the reference ``genotypes.py``, is accepted too.
        """
        if len(text) > MAX_TEXT:
            raise ValueError(f"genotype text of {len(text):,} characters is longer than the {MAX_TEXT:,} a genotype can need")
        text = text.strip()
        if not text:
            raise ValueError("empty genotype text")
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"genotype JSON is malformed: {e}") from None
            except RecursionError:
                raise ValueError("genotype JSON nests far deeper than a genotype does") from None
            return cls.from_dict(data)
        try:
            tree = ast.parse(text, mode="exec")
        except SyntaxError as e:
            raise ValueError(f"genotype text is neither JSON nor Genotype(...): {e.msg} at line {e.lineno}, column {e.offset}") from None
        except (MemoryError, RecursionError):  # Python's parser gives up on deeply nested text ("- - - ... 1")
            raise ValueError("genotype text nests far deeper than a genotype does (Python's parser gave up on it)") from None
        if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.Expr, ast.Assign)):
            raise ValueError("genotype text must be a single Genotype(...) expression (or NAME = Genotype(...))")
        call = tree.body[0].value
        if not (isinstance(call, ast.Call) and _call_name(call) == "Genotype"):
            raise ValueError("genotype text must be a call Genotype(normal=..., normal_concat=..., reduce=..., reduce_concat=...)")
        if len(call.args) > len(FIELDS):
            raise ValueError(f"Genotype(...) takes at most {len(FIELDS)} positional arguments, got {len(call.args)}")
        values = dict(zip(FIELDS, (_literal(a) for a in call.args)))
        for kw in call.keywords:
            if kw.arg is None:
                raise ValueError("Genotype(**kwargs) is not accepted; write the fields out")
            if kw.arg in values:
                raise ValueError(f"Genotype(...) got {kw.arg!r} twice")
            values[kw.arg] = _literal(kw.value)
        return cls.from_dict(values)

    def save(self, path: str | Path) -> None:
        """Write JSON atomically, one field per line (readable and diff-friendly)."""
        body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in self.to_dict().items())
        atomic_write_bytes(path, ("{\n" + body + "\n}\n").encode())

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        """Read a file written by :meth:`save`, or any text :meth:`parse` accepts."""
        path = Path(path)
        try:
            if path.stat().st_size > MAX_TEXT:
                raise ValueError(f"cannot read genotype file {path}: {path.stat().st_size:,} bytes is larger than a genotype can be")
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read genotype file {path}: {e}") from None
        try:
            return cls.parse(text)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


# --- validation --------------------------------------------------------------------------------
def _check_cell(name: str, pairs: Any) -> tuple[Pair, ...]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise ValueError(f"{name} must be a list of (op, input) pairs, not {type(pairs).__name__}")
    if len(pairs) > MAX_PAIRS:
        raise ValueError(f"{name} has {len(pairs):,} entries; a cell has at most {MAX_PAIRS} (op, input) pairs here")
    # pt.darts nests the pairs per node ([[(op, i), (op, j)], ...]); flatten to the reference layout
    if pairs and all(isinstance(p, (list, tuple)) and p and isinstance(p[0], (list, tuple)) for p in pairs):
        pairs = [q for node in pairs for q in node]
    if len(pairs) < 2 or len(pairs) % 2:
        raise ValueError(f"{name} has {len(pairs)} (op, input) pairs; a cell needs exactly 2 per intermediate node (an even number, at least 2)")
    out = []
    for k, pair in enumerate(pairs):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ValueError(f"{name}[{k}] = {pair!r} is not an (op, input) pair")
        op, index = pair
        if op not in OPS:
            raise ValueError(f"{name}[{k}]: unknown op {op!r}; known ops: {', '.join(OPS)}")
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"{name}[{k}]: input {index!r} of {op!r} is not an integer state index")
        node = k // 2  # pairs 2k and 2k+1 feed intermediate node k, which is state k + 2
        if not 0 <= index < node + 2:
            raise ValueError(
                f"{name}[{k}] ({op!r}, {index}): input {index} does not exist for node {node} (state {node + 2}); "
                f"it can read states 0..{node + 1} (0, 1: the previous cells, 2..: earlier nodes)"
            )
        out.append((op, index))
    return tuple(out)


def _check_concat(name: str, concat: Any, steps: int) -> tuple[int, ...]:
    if isinstance(concat, (str, bytes)) or not isinstance(concat, (Sequence, range)):
        raise ValueError(f"{name} must be a list of state indices, not {type(concat).__name__}")
    size = _range_len(concat) if isinstance(concat, range) else len(concat)  # a range's length is computed, not expanded
    if size > MAX_PAIRS:
        raise ValueError(f"{name} has {size:,} entries; a cell concatenates at most {MAX_PAIRS} states")
    concat = tuple(concat)
    if not concat:
        raise ValueError(f"{name} is empty; the cell output needs at least one state")
    for i in concat:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < steps + 2:
            raise ValueError(f"{name}: {i!r} is not a state of a cell with {steps} nodes (valid: 0..{steps + 1})")
    if len(set(concat)) != len(concat):
        raise ValueError(f"{name} lists a state twice: {list(concat)}")
    return concat


def _range_len(r: range) -> int:
    """``len(r)``, which raises OverflowError past 2**63 elements; here a number to compare with the bounds."""
    return max(0, (r.stop - r.start + r.step - (1 if r.step > 0 else -1)) // r.step)


# --- the safe literal walker for Genotype(...) strings -----------------------------------------
def _call_name(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None  # genotypes.Genotype(...)


def _literal(node: ast.AST) -> Any:
    """Strings, integers, lists and tuples of them, and ``range(a, b[, step])``; nothing else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) and type(node.operand.value) is int:
        return -node.operand.value  # parsed so that validation can report the bad index
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Call) and _call_name(node) == "range" and not node.keywords and 1 <= len(node.args) <= 3:
        args = [_literal(a) for a in node.args]
        if all(type(a) is int for a in args) and (len(args) < 3 or args[2] != 0):
            r = range(*args)
            size = _range_len(r)
            if size > MAX_RANGE:  # measured before expanding
                raise ValueError(f"{shorten(ast.unparse(node), 80)} has {size:,} elements; a genotype never needs more than {MAX_RANGE}")
            return list(r)
    raise ValueError(f"unsupported expression {ast.unparse(node)!r} in genotype text (only strings, integers, lists, tuples and range(a, b) are allowed)")


# --- published cells ---------------------------------------------------------------------------
# DARTS first order (V1) and second order (V2), the cells of the paper's Fig. 4/5 (quark0/darts cnn/genotypes.py)
DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0), ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3, 4, 5],
)
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)
# PC-DARTS (Xu et al., ICLR 2020), the CIFAR-10 cell (yuhuixu1993/PC-DARTS genotypes.py, PC_DARTS_cifar)
PC_DARTS = Genotype(
    normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
    normal_concat=range(2, 6),
    reduce=[("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2), ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    reduce_concat=range(2, 6),
)
GENOTYPES: dict[str, Genotype] = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "PC_DARTS": PC_DARTS}


def resolve_genotype(value: str | Genotype) -> Genotype:
    """A genotype from a built-in name (``DARTS_V2``, any case), a ``.json``/``.txt`` file (or a run
    directory holding ``genotype.json``), or literal JSON / ``Genotype(...)`` text."""
    if not isinstance(value, str):
        return Genotype.coerce(value)
    text = value.strip()
    if text.upper() in GENOTYPES or text.startswith(("{", "Genotype(")) or ("=" in text and "Genotype(" in text):
        return Genotype.coerce(text)
    if len(text.encode()) > 4096:  # longer than any path the OS accepts: not a file name
        raise ValueError(f"genotype {text[:60]!r}... ({len(text):,} characters) is not a built-in name, genotype text or a file")
    path = genotype_file(text)  # the file itself, or a run directory's genotype.json
    if path is not None:
        return Genotype.load(path)
    if text.endswith((".json", ".txt")) or "/" in text:
        raise ValueError(f"genotype file {text} does not exist")
    raise ValueError(
        f"genotype {text[:200]!r} is not a built-in ({', '.join(GENOTYPES)}), an existing file, or genotype text "
        "(JSON or Genotype(normal=[...], ...))"
    )


# --- discretisation and sampling ---------------------------------------------------------------
def num_edges(steps: int) -> int:
    """Edges of a searched cell: node i reads states 0..i+1, so sum_i (2 + i)."""
    return sum(2 + i for i in range(steps))


def derive_genotype(
    weights_normal: Any,
    weights_reduce: Any,
    primitives: Sequence[str] = PRIMITIVES,
    steps: int = 4,
    multiplier: int = 4,
) -> Genotype:
    """The discrete cells of DARTS Sec. 2.4 from mixed-op weights of shape (E, O).

    Per intermediate node, keep the 2 incoming edges whose strongest non-``none`` op weighs most,
    each with that op (strongest edge first, as in the reference ``_parse``); the cell output
    concatenates the last ``multiplier`` states. Rows are ordered as the reference supernet:
    node 0's edges from states 0, 1, then node 1's from states 0, 1, 2, and so on.
    """
    none = primitives.index("none") if "none" in primitives else None
    concat = list(range(2 + steps - multiplier, steps + 2))

    def parse(name: str, weights: Any) -> list[Pair]:
        w = torch.as_tensor(weights).detach().to("cpu", torch.float64)  # (E, O)
        if w.dim() != 2 or w.shape != (num_edges(steps), len(primitives)):
            raise ValueError(f"{name} weights have shape {tuple(w.shape)}; expected ({num_edges(steps)}, {len(primitives)}) = (edges of {steps} nodes, ops)")
        if none is not None:
            w[:, none] = float("-inf")  # never pick `none`, never rank an edge by it
        gene, start = [], 0
        for i in range(steps):
            rows = w[start : start + i + 2]  # (i + 2, O): the edges into node i
            strength, best_op = rows.max(dim=1)
            # stable descending sort: ties go to the lower input index, as the reference's sorted()
            order = sorted(range(i + 2), key=lambda j: -strength[j].item())[:2]
            gene += [(primitives[int(best_op[j])], j) for j in order]
            start += i + 2
        return gene

    if not 1 <= multiplier <= steps:
        raise ValueError(f"multiplier must be in 1..steps ({steps}), not {multiplier}")
    return Genotype(parse("normal", weights_normal), concat, parse("reduce", weights_reduce), concat)


def sample_genotype(
    seed: int | random.Random,
    primitives: Sequence[str] = PRIMITIVES,
    steps: int = 4,
    multiplier: int = 4,
) -> Genotype:
    """A genotype drawn uniformly from the DARTS space (the random-search baseline of Li & Talwalkar 2019):
    per node, 2 distinct input states and, for each, an op from the non-``none`` primitives."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    ops = [p for p in primitives if p != "none"]
    concat = list(range(2 + steps - multiplier, steps + 2))

    def cell() -> list[Pair]:
        gene = []
        for i in range(steps):
            for j in sorted(rng.sample(range(i + 2), 2)):
                gene.append((rng.choice(ops), j))
        return gene

    normal = cell()
    return Genotype(normal, concat, cell(), concat)
