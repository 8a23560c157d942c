"""DARTS: softmax(alpha) mixing, no regulariser, the space's own genotype rule.

Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019; quark0/darts
``cnn/model_search.py``, ``architect.py``, ``train_search.py``. The bilevel step itself (first
order, or the unrolled second order) is the search module's: every method runs it.
"""

from __future__ import annotations

from .base import SearchMethod


class DARTS(SearchMethod):
    name = "darts"
    citation = 'Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019'
    code = "quark0/darts"
    preset = {}

    @classmethod
    def is_on(cls, hp) -> bool:
        return False  # nothing to add to the bilevel step
