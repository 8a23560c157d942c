"""Cell search spaces behind one interface (:class:`base.SearchSpace`): DARTS (Liu et al., ICLR 2019)
and NAS-Bench-201 (Dong & Yang, ICLR 2020).

    from lightning_dlstrat.spaces import get_space
    space = get_space("nb201")
    net = space.supernet()                       # fast batched supernet
    genotype = space.discretise(net.arch_parameters())
    model = space.network(genotype)

The search module takes a space by name (``DARTSSearch(space="nb201")``, ``dlstrat fit --model
darts --model.space=nb201``); random search draws with ``space.sample(rng)`` or, decision by
decision, ``space.from_choices({name: pick(options) for name, options in space.choices().items()})``.

Plain ``nn.Module`` code only: nothing here imports the trainers or the run layer.
"""

from __future__ import annotations

from .base import CellTopology, GenotypeLike, SearchSpace
from .darts import DartsSpace
from .nb201 import NB201Genotype, NB201GenotypeError, NB201Network, NB201Space

__all__ = ["SPACES", "CellTopology", "DartsSpace", "GenotypeLike", "NB201Genotype", "NB201GenotypeError", "NB201Network", "NB201Space", "SearchSpace", "get_space"]

SPACES: dict[str, type[SearchSpace]] = {"darts": DartsSpace, "nb201": NB201Space}


def get_space(name: str) -> SearchSpace:
    """A space by name: "darts" or "nb201" ("nas-bench-201", "nats-tss" are accepted for the latter)."""
    key = name.strip().lower().replace("_", "-")
    key = {"nas-bench-201": "nb201", "nasbench201": "nb201", "nats-tss": "nb201", "nats-bench": "nb201"}.get(key, key)
    if key not in SPACES:
        raise ValueError(f"unknown search space {name!r}; choose from: {', '.join(SPACES)}")
    return SPACES[key]()
