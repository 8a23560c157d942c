"""Differentiable-NAS search methods, one file each: DARTS and the collapse fixes that change it.

Each file holds one method, with its paper, its official repository, its settings
(:attr:`~base.SearchMethod.preset`) and the hooks the search module's bilevel step calls
(:mod:`.base` says which). Importing this package imports every method file, and each method
registers itself in :data:`METHODS` where it is defined.

    from lightning_dlstrat.methods import METHODS, expand
    expand("gdas", {"relaxation": None, "gumbel_tau": None})  # {'relaxation': 'gumbel', 'gumbel_tau': (10.0, 0.1)}

Nothing here imports the trainers or the run layer.
"""

from __future__ import annotations

# each registers itself; imported in the order users see the methods listed in
from . import darts  # noqa: F401, I001
from . import darts_minus, beta_darts, sdarts, fair_darts, gdas, drnas, pc_darts  # noqa: F401, I001
from . import pdarts_cap, darts_es, latency_budget  # noqa: F401, I001  (options, not methods of their own)
from .base import METHODS, SearchMethod, active_methods, expand, get_method, selectable
from .relaxation import Relaxation

__all__ = ["METHODS", "Relaxation", "SearchMethod", "active_methods", "expand", "get_method", "selectable"]
