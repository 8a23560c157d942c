"""DrNAS: mixing weights sampled from Dirichlet(ELU(alpha) + 1), reparameterised, and its KL regulariser.

Chen, Wang, Cheng, Tang, Hsieh, "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021;
xiangning-chen/DrNAS (commit f2caa4d): ``utils.py`` (a fresh Dirichlet(ELU(alpha) + 1) rsample in
every forward), ``architect.py`` (``reg_type``: ``l2``, the default, is Adam weight decay
``reg_scale`` = 1e-3 on alpha and no KL term; ``kl`` is reg_scale * sum over edges of
KL(Dir(ELU(alpha) + 1) || Dir(1)) in the architecture loss with weight decay 0; never both),
``model_search.py`` (the genotype from softmax(alpha)). Here ``dirichlet_reg`` is ``reg_type``;
with ``l2`` the weight decay is the module's ``arch_weight_decay`` (1e-3), with ``kl`` the KL
weight is ``dirichlet_kl`` (reg_scale, 1e-3).

Deliberate difference: the DARTS-space code searches in two progressive stages (partial
channels 6 then 4, ops pruned to 4 per edge after 25 epochs); here one stage (the run recipe in
``recipes/presets/darts.yaml`` says which).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import SearchMethod


class DrNAS(SearchMethod):
    name = "drnas"
    citation = 'Chen et al., "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021'
    code = "xiangning-chen/DrNAS"
    preset = {"relaxation": "dirichlet", "dirichlet_reg": "l2"}  # reg_type l2, the code's default
    keys = ("dirichlet_reg", "dirichlet_kl")
    mixing = "dirichlet"

    @classmethod
    def is_on(cls, hp) -> bool:
        return hp.get("relaxation") == "dirichlet"

    @classmethod
    def check(cls, hp, operations) -> None:
        kl, reg = hp.get("dirichlet_kl"), hp.get("dirichlet_reg")
        if kl is not None and kl < 0:
            raise ValueError(f"dirichlet_kl must be >= 0, not {kl!r}")
        if reg not in (None, "l2", "kl"):
            raise ValueError(f"dirichlet_reg (DrNAS's reg_type) must be 'l2' (weight decay on alpha, the default) or 'kl' (the KL term), not {reg!r}")
        if (kl or reg) and hp.get("relaxation") != "dirichlet":
            raise ValueError("dirichlet_kl and dirichlet_reg are DrNAS's regulariser: they need relaxation='dirichlet'")
        if kl and reg == "l2":
            raise ValueError(
                "dirichlet_kl (DrNAS's KL term) with dirichlet_reg='l2' is neither of DrNAS's regularisers: give dirichlet_reg='kl' "
                "for the KL term (then alpha's weight decay is 0), or leave dirichlet_kl unset for l2 (alpha's weight decay)"
            )

    @classmethod
    def fill(cls, given) -> dict:
        filled = super().fill(given)
        if given.get("dirichlet_kl") and given.get("dirichlet_reg") is None:
            filled["dirichlet_reg"] = "kl"  # a KL weight given (as runs before reg_type existed did): the kl variant
        return filled

    def __init__(self, hp, operations=()):
        super().__init__(hp, operations)
        kl = hp.get("dirichlet_kl")
        self.reg = hp.get("dirichlet_reg") or ("kl" if kl else "l2")
        self.kl_weight = (1e-3 if kl is None else kl) if self.reg == "kl" else 0.0  # reg_scale

    def arch_weight_decay(self, weight_decay: float) -> float:
        return 0.0 if self.reg == "kl" else weight_decay  # kl: the KL term replaces the weight decay

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
        kl = self.kl_weight
        if not kl:
            return None
        concentration = F.elu(alphas) + 1  # (E_total, O)
        prior = torch.distributions.Dirichlet(torch.ones_like(concentration))
        return kl * torch.distributions.kl_divergence(torch.distributions.Dirichlet(concentration), prior).sum()
