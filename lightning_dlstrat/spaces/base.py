"""The interface every cell-based search space implements, so that search, random search, retraining
and pictures can be written once for DARTS and NAS-Bench-201 alike.

A *cell search space* (Zoph et al., "Learning Transferable Architectures", CVPR 2018; Liu et al.,
"DARTS", ICLR 2019; Dong & Yang, "NAS-Bench-201", ICLR 2020) is: a set of candidate operations, a
cell topology (a DAG whose edges each carry one operation), a macro skeleton that stacks cells into
a network, and a discrete encoding of one architecture (the *genotype*). From it a search needs:

- a supernet whose edges mix every operation by the softmax of architecture parameters alpha,
  in a per-edge *reference* form and a batched *fast* form that compute the same function;
- ``discretise(alpha)``: the genotype those parameters pick;
- the genotype's text and JSON forms (``parse`` / ``str`` / ``to_dict`` / ``from_dict``);
- ``network(genotype)``: the stand-alone evaluation network;
- ``sample(rng)``: a uniformly random genotype (the random-search baseline), and the same space as
  independent categorical decisions for samplers that pick them one by one (``choices`` /
  ``from_choices`` / ``to_choices``: Optuna's ``suggest_categorical`` takes them as they are);
- ``plot(genotype, path)``: a picture of the cell(s); ``plot_alpha``: the architecture weights;
- for the search module (``trainers/darts_search.py``, ``--model.space=NAME``): ``search_args``,
  the module arguments the space's supernet reads, ``search_supernet`` to build it from them,
  ``cell_weights`` and ``chosen_ops`` for what it logs; ``retrain_recipe``, the ``dlstrat fit
  --model`` that trains a found genotype, and ``resolve_genotype`` for what a user passes it.

This module holds only the interface and the topology description; it imports no network code.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

__all__ = ["SPACES", "CellTopology", "GenotypeLike", "SearchSpace", "get_space", "register_space"]


@runtime_checkable
class GenotypeLike(Protocol):
    """What a space's genotype type offers: text (``parse`` / ``str``) and JSON (``to_dict`` / ``from_dict``) forms.

    ``parse(str(g)) == g`` and ``from_dict(json.loads(json.dumps(g.to_dict()))) == g`` must hold.
    """

    @classmethod
    def parse(cls, text: str) -> GenotypeLike: ...

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, d: Any) -> GenotypeLike: ...

    def __str__(self) -> str: ...

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> GenotypeLike: ...


@dataclass(frozen=True)
class CellTopology:
    """The DAG of one cell: which nodes exist, which are inputs, which edges carry an operation.

    ``edges`` lists ``(source, target)`` pairs in the row order of the supernet's alpha, so row
    ``k`` of an ``(E, O)`` alpha belongs to edge ``edges[k]``. ``outputs`` are the nodes the cell
    output is made of, combined by ``combine``: ``"concat"`` (channel concatenation, DARTS) or
    ``"identity"`` (a single output node, NAS-Bench-201).
    """

    num_nodes: int
    inputs: tuple[int, ...]
    edges: tuple[tuple[int, int], ...]
    outputs: tuple[int, ...]
    combine: str

    def __post_init__(self):
        for s, t in self.edges:
            if not (0 <= s < t < self.num_nodes):
                raise ValueError(f"edge ({s}, {t}) is not a forward edge between nodes 0..{self.num_nodes - 1}")
        if self.combine not in ("concat", "identity"):
            raise ValueError(f"combine must be 'concat' or 'identity', not {self.combine!r}")

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def incoming(self, node: int) -> list[int]:
        """Row indices (into alpha) of the edges that end at ``node``."""
        return [k for k, (_, t) in enumerate(self.edges) if t == node]


class SearchSpace(abc.ABC):
    """A cell search space. Subclasses are stateless: one instance per space is enough.

    Conventions shared by all spaces:
    - ``supernet(implementation="fast" | "reference", **config)`` returns an ``nn.Module`` with
      ``arch_parameters()``, ``weight_parameters()``, ``edge_weights()`` (softmax of alpha,
      detached: one (E, O) tensor per cell type, or the tensor itself for a single type),
      ``operations`` (alpha's column names) and ``genotype()``; the two implementations compute
      the same function;
    - ``discretise(alpha)`` takes what ``supernet.arch_parameters()`` returns (one tensor, or a
      sequence of them in that order) and gives the same genotype as ``supernet.genotype()``;
    - ``sample(rng)`` draws with a ``random.Random`` only, so a seed fixes the sequence.

    Adding a space: a folder ``spaces/<name>/`` with a subclass of this decorated with
    :func:`register_space`, and its import in ``spaces/__init__.py``. A supernet argument no other
    space has is also one line in ``DARTSSearch.__init__``.
    """

    name: ClassVar[str]
    genotype_class: ClassVar[type]
    cell_types: ClassVar[tuple[str, ...]]  # one alpha matrix per cell type: ("cell",) or ("normal", "reduce")
    retrain_recipe: ClassVar[str]  # `dlstrat fit --model NAME --genotype RUN` trains a found genotype
    architecture: ClassVar[str]  # the Hub / timm architecture of the evaluation network
    # DARTSSearch arguments the supernet reads (search_supernet's keywords); the search module
    # refuses any other space's argument set away from its default
    search_args: ClassVar[tuple[str, ...]]
    search_arg_notes: ClassVar[dict[str, str]] = {}  # why an argument exists in this space only, for the error another space gives

    # --- description -----------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def operations(self) -> tuple[str, ...]:
        """The candidate operations, in the column order of alpha."""

    @property
    @abc.abstractmethod
    def topology(self) -> CellTopology:
        """The cell DAG (the same for every cell type)."""

    # --- networks --------------------------------------------------------------------------------
    @abc.abstractmethod
    def supernet(self, implementation: str = "fast", **config: Any) -> nn.Module:
        """The weight-sharing supernet: ``"fast"`` (batched) or ``"reference"`` (one mixed op per edge)."""

    @abc.abstractmethod
    def search_supernet(self, implementation: str, in_shape: Sequence[int], num_classes: int, **args: Any) -> nn.Module:
        """The supernet a search trains, from the search module's ``search_args`` (checked here, with
        what to change when a value cannot work, e.g. an input too small for the skeleton)."""

    @abc.abstractmethod
    def network(self, genotype: Any, **config: Any) -> nn.Module:
        """The evaluation network of ``genotype`` (timm-style: forward_features, forward_head, ...)."""

    # --- genotypes -------------------------------------------------------------------------------
    @abc.abstractmethod
    def discretise(self, alpha: torch.Tensor | Sequence[torch.Tensor]) -> Any:
        """The genotype the architecture parameters (logits, as the supernet holds them) select."""

    @abc.abstractmethod
    def sample(self, rng: random.Random) -> Any:
        """A genotype drawn uniformly from the space."""

    @abc.abstractmethod
    def choices(self) -> dict[str, tuple[str, ...]]:
        """The space as independent categorical decisions: name -> its options (plain strings).

        Drawing every decision uniformly and independently is a uniform draw from the space (the
        distribution of :meth:`sample`), and :meth:`from_choices` turns one value per decision into
        the genotype. A sampler that suggests values one by one (Optuna's ``trial.suggest_categorical(
        name, options)``) needs nothing else; :meth:`to_choices` is the inverse (to enqueue a known cell).
        """

    @abc.abstractmethod
    def from_choices(self, chosen: Mapping[str, str]) -> Any:
        """The genotype of one option per decision of :meth:`choices` (every decision, nothing else)."""

    @abc.abstractmethod
    def to_choices(self, genotype: Any) -> dict[str, str]:
        """The decisions that give ``genotype`` (``from_choices(to_choices(g))`` is the same cell)."""

    def parse(self, text: str) -> Any:
        """A genotype from its text or JSON form."""
        return self.genotype_class.parse(text)

    def from_dict(self, d: Any) -> Any:
        return self.genotype_class.from_dict(d)

    @abc.abstractmethod
    def resolve_genotype(self, value: Any) -> Any:
        """What a user passes as ``--genotype``: a genotype, its text or JSON, a genotype file, or a
        search (or training) run directory holding one. Raises ValueError saying what was expected."""

    def supernet_args(self, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments of ``given`` (the search module's) this space's supernet reads.

        Any other registered space's supernet argument set away from its default (``defaults``)
        is an error naming the space it belongs to, so a setting never silently does nothing.
        """
        owners = {arg: name for name, cls in SPACES.items() for arg in cls.search_args if arg not in self.search_args}
        for arg, owner in owners.items():
            if given[arg] != defaults[arg]:
                note = SPACES[owner].search_arg_notes.get(arg)
                why = f" ({note})" if note else ""
                raise ValueError(
                    f"{arg}={given[arg]!r} is an argument of the {owner} space's supernet{why}; the {self.name} supernet reads "
                    f"{', '.join(self.search_args)}: leave {arg} at its default ({defaults[arg]!r}) or search with space={owner!r}"
                )
        return {arg: given[arg] for arg in self.search_args}

    # --- what a search logs ------------------------------------------------------------------------
    def cell_weights(self, net: nn.Module) -> dict[str, torch.Tensor]:
        """``{cell type: softmax(alpha) (E, O)}`` of a supernet, detached, on the CPU."""
        weights = net.edge_weights()
        weights = [weights] if isinstance(weights, torch.Tensor) else list(weights)
        if len(weights) != len(self.cell_types):
            raise ValueError(f"the {self.name} supernet gave {len(weights)} weight matrices for the cell types {self.cell_types}")
        return {cell: w.detach().cpu() for cell, w in zip(self.cell_types, weights)}

    @abc.abstractmethod
    def chosen_ops(self, genotype: Any) -> dict[str, list[str]]:
        """``{cell type: the operations the genotype keeps}`` (skip connections counted from it)."""

    @abc.abstractmethod
    def cap_skips(self, net: nn.Module, genotype: Any, cap: int) -> Any:
        """The P-DARTS skip cap (Chen et al., ICCV 2019): ``genotype`` (``net.genotype()``) with at most
        ``cap`` ``skip_connect`` in the cell the space caps, re-derived from ``net``'s weights."""

    # --- latency (a measured lookup table: lightning_dlstrat/latency.py) ---------------------------
    def chosen_edges(self, genotype: Any) -> dict[str, list[tuple[int, str]]]:
        """``{cell type: [(edge, operation), ...]}``: the edges (rows of alpha, :attr:`topology` order) the genotype keeps, and their operations."""
        raise NotImplementedError(f"the {self.name} space has no latency model")

    def with_op(self, genotype: Any, cell: str, k: int, op: str) -> Any:
        """``genotype`` with the ``k``-th kept edge of cell type ``cell`` (:meth:`chosen_edges` order) running ``op`` instead."""
        raise NotImplementedError(f"the {self.name} space has no latency model")

    def reconnections(self, genotype: Any) -> list[list[tuple[str, int]]]:
        """The ways to connect a genotype whose cell has no path from its input to its output (its rule kept
        ``none`` on edges): per path, the kept edges ``(cell type, k)`` (:meth:`chosen_edges` order) on it that
        run ``none``. Empty when the cells connect: always in a space whose rule never keeps ``none``."""
        return []

    def latency_op(self, name: str, channels: int, stride: int) -> nn.Module:
        """The evaluation network's candidate operation ``name`` at a position (its channels and stride), to time alone."""
        raise NotImplementedError(f"the {self.name} space has no latency model")

    def latency_positions(self, net: nn.Module, in_shape: Sequence[int]) -> dict[str, list[list[tuple[int, int, int, int]]]]:
        """Where each edge of each cell of the evaluation network ``net`` runs: ``{cell type: [[(C, H, W, stride)
        per edge] per cell of that type, in the network's order]}``, read from a forward pass of one input."""
        raise NotImplementedError(f"the {self.name} space has no latency model")

    def latency_rule(self) -> dict[str, Any]:
        """How the genotype rule picks edges, for the differentiable expected latency (methods/latency_budget.py):
        ``{"kind": "all"}`` (every edge kept, its argmax operation) or ``{"kind": "top_k", "k": 2, "nodes": [[edges
        into node] ...], "exclude": ["none"]}`` (each node keeps its ``k`` strongest edges, ``exclude`` never chosen)."""
        raise NotImplementedError(f"the {self.name} space has no latency model")

    # --- pictures --------------------------------------------------------------------------------
    @abc.abstractmethod
    def plot(self, genotype: Any, path: str | Path, title: str | None = None) -> None:
        """Draw ``genotype``'s cell(s) to a PNG at ``path`` (matplotlib Agg canvas, written atomically)."""

    @abc.abstractmethod
    def plot_alpha(self, weights: Mapping[str, torch.Tensor], operations: Sequence[str], path: str | Path, title: str | None = None) -> None:
        """Draw the architecture weights (:meth:`cell_weights`' form) to a PNG at ``path``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, operations={list(self.operations)})"


def as_alpha_list(alpha: torch.Tensor | Sequence[torch.Tensor], expected: int, space: str) -> list[torch.Tensor]:
    """``alpha`` as a list of detached float64 CPU tensors, checking there are ``expected`` of them (at least)."""
    items = [alpha] if isinstance(alpha, torch.Tensor) else list(alpha)
    if len(items) < expected:
        raise ValueError(f"the {space} space needs {expected} alpha tensor(s) (one per cell type), got {len(items)}")
    return [torch.as_tensor(a).detach().to("cpu", torch.float64) for a in items]


def genotype_file(text: str, names: Sequence[str] = ("genotype.json",)) -> Path | None:
    """The file ``text`` names: itself, or the first of ``names`` inside the directory it names; None if neither exists.

    What a user types as ``--genotype`` may be genotype text rather than a path, so a value longer
    than any path, or one the OS refuses to stat, is simply not a file.
    """
    if len(text.encode()) > 4096:
        return None
    path = Path(text)
    try:
        if path.is_dir():
            return next((path / n for n in names if (path / n).is_file()), None)
        return path if path.is_file() else None
    except OSError:  # a name component over 255 bytes, and the like
        return None


def check_choices(chosen: Mapping[str, str], options: Mapping[str, tuple[str, ...]]) -> None:
    """Every decision given once, each with one of its options."""
    if not isinstance(chosen, Mapping):
        raise ValueError(f"choices must be a mapping of decision names to options, not {type(chosen).__name__}")
    missing, extra = [k for k in options if k not in chosen], [k for k in chosen if k not in options]
    if missing or extra:
        raise ValueError(f"choices must give every decision of the space: missing {missing[:4]}, unknown {[str(k)[:40] for k in extra[:4]]}")
    for key, value in chosen.items():
        if value not in options[key]:
            raise ValueError(f"{key}: {str(value)[:40]!r} is not one of {list(options[key])}")


# --- the registry: each space registers itself where it is defined ------------------------------------
SPACES: dict[str, type[SearchSpace]] = {}
_ALIASES: dict[str, str] = {}


def register_space(*aliases: str):
    """Class decorator: list a :class:`SearchSpace` under its ``name`` (and ``aliases``) in :data:`SPACES`."""

    def register(cls: type[SearchSpace]) -> type[SearchSpace]:
        if cls.name in SPACES and SPACES[cls.name] is not cls:
            raise ValueError(f"a search space named {cls.name!r} is registered already ({SPACES[cls.name].__module__})")
        SPACES[cls.name] = cls
        _ALIASES.update({_key(a): cls.name for a in aliases})
        return cls

    return register


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def get_space(name: str) -> SearchSpace:
    """A space by name or alias (``"nas-bench-201"`` for ``"nb201"``); ValueError naming the spaces for an unknown one."""
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key not in SPACES:
        raise ValueError(f"unknown search space {name!r}; choose from: {', '.join(SPACES)}")
    return SPACES[key]()
