"""GDAS: one operation per edge, sampled by hard Gumbel-softmax, temperature annealed linearly 10 -> 0.1.

Dong & Yang, "Searching for a Robust Neural Architecture in Four GPU Hours", CVPR 2019;
D-X-Y/AutoDL-Projects ``xautodl/models/cell_searchs/search_model_gdas.py`` (the hard sample with the
soft sample's straight-through gradient), ``exps/NAS-Bench-201-algos/GDAS.py`` (tau from 10 to 0.1
linearly, reaching 0.1 at the last epoch). The genotype is read from softmax(alpha).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import SearchMethod


class GDAS(SearchMethod):
    name = "gdas"
    citation = 'Dong & Yang, "Searching for a Robust Neural Architecture in Four GPU Hours", CVPR 2019'
    code = "D-X-Y/AutoDL-Projects"
    preset = {"relaxation": "gumbel", "gumbel_tau": (10.0, 0.1)}
    keys = ("gumbel_tau",)
    mixing = "gumbel"

    @classmethod
    def is_on(cls, hp) -> bool:
        return hp.get("relaxation") == "gumbel"

    @classmethod
    def check(cls, hp, operations) -> None:
        tau = hp.get("gumbel_tau")
        if tau is not None and (len(tau) != 2 or min(tau) <= 0):
            raise ValueError(f"gumbel_tau must be two positive temperatures (start, end), e.g. [10, 0.1], not {tau!r}")
        if tau is not None and hp.get("relaxation") != "gumbel":
            raise ValueError("gumbel_tau is GDAS's temperature: it needs relaxation='gumbel'")

    def __init__(self, hp, operations=()):
        super().__init__(hp, operations)
        self.start, self.end = hp.get("gumbel_tau") or (10.0, 0.1)
        self.tau = self.start

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        self.tau = self.start - (self.start - self.end) * epoch / max(epochs - 1, 1)  # the end reached at the last epoch
        return {"arch/gumbel_tau": self.tau}

    def mix(self, alpha: torch.Tensor, sample: bool, seed: int) -> torch.Tensor:
        # alpha: (E, O)
        if not sample:
            return F.softmax(alpha, dim=-1)
        g = torch.Generator(device="cpu").manual_seed(seed)
        u = torch.rand(alpha.shape, generator=g, dtype=alpha.dtype).to(alpha.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7)))  # (E, O) standard Gumbel
        soft = F.softmax((alpha + gumbel) / self.tau, dim=-1)
        hard = F.one_hot(soft.argmax(-1), alpha.shape[-1]).to(soft.dtype)
        return hard - soft.detach() + soft  # the one-hot's value, the soft sample's gradient
