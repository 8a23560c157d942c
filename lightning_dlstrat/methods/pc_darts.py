"""PC-DARTS: partial channel connections (1/K of the channels through the mixed op) and edge normalisation.

Xu, Xie, Zhang, Chen, Qi, Tian, Xiong, "PC-DARTS: Partial Channel Connections for
Memory-Efficient Architecture Search", ICLR 2020; yuhuixu1993/PC-DARTS ``model_search.py``. Both
parts are built into the DARTS space's supernet (``partial_channels``: K, and the edge betas that
are architecture parameters beside alpha); this method only names the setting.
"""

from __future__ import annotations

from .base import SearchMethod


class PCDARTS(SearchMethod):
    name = "pc-darts"
    citation = 'Xu et al., "PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture Search", ICLR 2020'
    code = "yuhuixu1993/PC-DARTS"
    preset = {"partial_channels": 4}  # K = 4
    keys = ("partial_channels",)

    @classmethod
    def is_on(cls, hp) -> bool:
        return (hp.get("partial_channels") or 1) > 1
