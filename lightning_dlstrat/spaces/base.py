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
- ``sample(rng)``: a uniformly random genotype (the random-search baseline);
- ``plot(genotype, path)``: a picture of the cell(s).

This module holds only the interface and the topology description; it imports no network code.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

__all__ = ["CellTopology", "GenotypeLike", "SearchSpace"]


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
      detached) and ``genotype()``; the two implementations compute the same function;
    - ``discretise(alpha)`` takes what ``supernet.arch_parameters()`` returns (one tensor, or a
      sequence of them in that order) and gives the same genotype as ``supernet.genotype()``;
    - ``sample(rng)`` draws with a ``random.Random`` only, so a seed fixes the sequence.
    """

    name: ClassVar[str]
    genotype_class: ClassVar[type]
    cell_types: ClassVar[tuple[str, ...]]  # one alpha matrix per cell type: ("cell",) or ("normal", "reduce")

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
    def network(self, genotype: Any, **config: Any) -> nn.Module:
        """The evaluation network of ``genotype`` (timm-style: forward_features, forward_head, ...)."""

    # --- genotypes -------------------------------------------------------------------------------
    @abc.abstractmethod
    def discretise(self, alpha: torch.Tensor | Sequence[torch.Tensor]) -> Any:
        """The genotype the architecture parameters (logits, as the supernet holds them) select."""

    @abc.abstractmethod
    def sample(self, rng: random.Random) -> Any:
        """A genotype drawn uniformly from the space."""

    def parse(self, text: str) -> Any:
        """A genotype from its text or JSON form."""
        return self.genotype_class.parse(text)

    def from_dict(self, d: Any) -> Any:
        return self.genotype_class.from_dict(d)

    # --- pictures --------------------------------------------------------------------------------
    @abc.abstractmethod
    def plot(self, genotype: Any, path: str | Path, title: str | None = None) -> None:
        """Draw ``genotype``'s cell(s) to a PNG at ``path`` (matplotlib Agg canvas, written atomically)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, operations={list(self.operations)})"


def as_alpha_list(alpha: torch.Tensor | Sequence[torch.Tensor], expected: int, space: str) -> list[torch.Tensor]:
    """``alpha`` as a list of detached float64 CPU tensors, checking there are ``expected`` of them (at least)."""
    items = [alpha] if isinstance(alpha, torch.Tensor) else list(alpha)
    if len(items) < expected:
        raise ValueError(f"the {space} space needs {expected} alpha tensor(s) (one per cell type), got {len(items)}")
    return [torch.as_tensor(a).detach().to("cpu", torch.float64) for a in items]
