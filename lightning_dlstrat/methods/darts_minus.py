"""DARTS-: an auxiliary skip connection on every edge, its weight beta decaying linearly 1 -> 0.

Chu, Wang, Zhang, Li, Wei, Chen, Yan, "DARTS-: Robustly Stepping out of Performance Collapse
Without Indicators", ICLR 2021; Meituan-AutoML/DARTS- ``src/search/model_search.py`` (the
auxiliary skip, added to every edge's mixed output in training forwards), ``src/utils.py`` (beta's
linear decay over the search). The genotype is read from softmax(alpha), without the skip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import SearchMethod


class DARTSMinus(SearchMethod):
    name = "darts-"
    citation = 'Chu et al., "DARTS-: Robustly Stepping out of Performance Collapse Without Indicators", ICLR 2021'
    code = "Meituan-AutoML/DARTS-"
    preset = {"aux_skip": True}
    keys = ("aux_skip",)

    def __init__(self, hp, operations=()):
        super().__init__(hp, operations)
        self.skip_index = self.operations.index("skip_connect") if "skip_connect" in self.operations else None  # alpha's column
        self.beta = 1.0  # the auxiliary skip's weight this epoch

    @classmethod
    def check(cls, hp, operations) -> None:
        if hp.get("aux_skip") and "skip_connect" not in operations:
            raise ValueError("aux_skip (DARTS-) adds to the skip_connect weight: the primitives have no skip_connect")

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        self.beta = 1.0 - epoch / epochs  # linear 1 -> 0 over the search
        return {"arch/aux_skip_beta": self.beta}

    def perturb(self, weights: torch.Tensor, phase: str, seed: int) -> torch.Tensor:
        # weights: (E, O); the skip's weight plus beta: the mixed output gains beta * x on every edge
        if not self.beta or self.skip_index is None:
            return weights
        return weights + self.beta * F.one_hot(torch.tensor(self.skip_index), weights.shape[-1]).to(weights)
