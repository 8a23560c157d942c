"""DrNAS: mixing weights sampled from Dirichlet(ELU(alpha) + 1), reparameterised, and its KL regulariser.

Chen, Wang, Cheng, Tang, Hsieh, "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021;
xiangning-chen/DrNAS ``utils.py`` (the Dirichlet of ELU(alpha) + 1), ``model_search.py`` (KL to
the Dir(1) anchor). The genotype is read from softmax(alpha).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import SearchMethod


class DrNAS(SearchMethod):
    name = "drnas"
    citation = 'Chen et al., "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021'
    code = "xiangning-chen/DrNAS"
    preset = {"relaxation": "dirichlet", "dirichlet_kl": 1e-3}
    keys = ("dirichlet_kl",)
    mixing = "dirichlet"

    @classmethod
    def is_on(cls, hp) -> bool:
        return hp.get("relaxation") == "dirichlet"

    @classmethod
    def check(cls, hp, operations) -> None:
        kl = hp.get("dirichlet_kl")
        if kl is not None and kl < 0:
            raise ValueError(f"dirichlet_kl must be >= 0, not {kl!r}")
        if kl and hp.get("relaxation") != "dirichlet":
            raise ValueError("dirichlet_kl is DrNAS's regulariser: it needs relaxation='dirichlet'")

    def mix(self, alpha: torch.Tensor, sample: bool, seed: int) -> torch.Tensor:
        # alpha: (E, O)
        if not sample:
            return F.softmax(alpha, dim=-1)
        concentration = F.elu(alpha) + 1  # (E, O) > 0
        # rsample takes no generator: fork the global stream, seeded, and leave it as it was
        devices = [alpha.device] if alpha.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return torch.distributions.Dirichlet(concentration).rsample()

    def regulariser(self, alphas: torch.Tensor, epoch: int, epochs: int) -> torch.Tensor | None:
        kl = self.hp.get("dirichlet_kl")
        if not kl:
            return None
        concentration = F.elu(alphas) + 1  # (E_total, O)
        prior = torch.distributions.Dirichlet(torch.ones_like(concentration))
        return kl * torch.distributions.kl_divergence(torch.distributions.Dirichlet(concentration), prior).sum()
