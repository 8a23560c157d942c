"""The P-DARTS skip cap: at most ``max_skips`` skip connections in the derived normal cell.

Chen, Xie, Wu, Tian, "Progressive Differentiable Architecture Search: Bridging the Depth Gap
between Search and Evaluation", ICCV 2019; chenxin061/pdarts ``train_search.py``: while the cell
keeps too many skips, the kept skip of smallest weight is zeroed and the cell derived again. Only
this rule of P-DARTS (not its progressive depth or op pruning), so it is an option, not a method
of its own: ``max_skips=2`` composes with every method.
"""

from __future__ import annotations

from .base import SearchMethod


class PDARTSSkipCap(SearchMethod):
    name = "p-darts-cap"
    citation = 'Chen et al., "Progressive Differentiable Architecture Search", ICCV 2019'
    code = "chenxin061/pdarts"
    keys = ("max_skips",)
    selectable = False

    @classmethod
    def is_on(cls, hp) -> bool:
        return hp.get("max_skips") is not None

    @classmethod
    def check(cls, hp, operations) -> None:
        cap = hp.get("max_skips")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise ValueError(f"max_skips (the P-DARTS cap) must be an integer >= 0, got {cap!r}")

    def genotype(self, net, space, genotype):
        return space.cap_skips(net, genotype, self.hp["max_skips"])
