"""Cell search spaces behind one interface (:class:`base.SearchSpace`), one folder each:
DARTS (``spaces/darts/``, Liu et al., ICLR 2019) and NAS-Bench-201 (``spaces/nb201/``, Dong & Yang,
ICLR 2020). A folder holds everything of its space: operations, genotype codec, supernets,
evaluation network, pictures.

    from lightning_dlstrat.spaces import get_space
    space = get_space("nb201")
    net = space.supernet()                       # fast batched supernet
    genotype = space.discretise(net.arch_parameters())
    model = space.network(genotype)

The search module takes a space by name (``DARTSSearch(space="nb201")``, ``dlstrat fit --model
darts --model.space=nb201``); random search draws with ``space.sample(rng)`` or, decision by
decision, ``space.from_choices({name: pick(options) for name, options in space.choices().items()})``.

Each space registers itself where it is defined (``@register_space``); importing this package
imports every space folder, so :data:`SPACES` is full. Plain ``nn.Module`` code only: nothing here
imports the search methods, the trainers or the run layer.
"""

from __future__ import annotations

from . import darts, nb201  # noqa: F401  (each space registers itself)
from .base import SPACES, CellTopology, GenotypeLike, SearchSpace, get_space, register_space
from .darts import DartsSpace
from .nb201 import NB201Genotype, NB201GenotypeError, NB201Network, NB201Space

__all__ = ["SPACES", "CellTopology", "DartsSpace", "GenotypeLike", "NB201Genotype", "NB201GenotypeError", "NB201Network", "NB201Space", "SearchSpace", "get_space", "register_space"]
