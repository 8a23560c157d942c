"""GDAS: one operation per edge, sampled by hard Gumbel-softmax, temperature annealed linearly 10 -> 0.1.

Dong & Yang, "Searching for a Robust Neural Architecture in Four GPU Hours", CVPR 2019;
D-X-Y/AutoDL-Projects (commit f46486e):

- ``xautodl/models/cell_searchs/search_model_gdas*.py``: per edge and forward, p =
  softmax((log_softmax(alpha) + g) / tau) with g standard Gumbel, h = onehot(argmax p) - sg(p) + p;
  the cell computes only the sampled op, times h[index]: its value is the op's output, its
  gradient reaches alpha through p[index] alone. Here every op is computed and weighted by
  onehot * h[index], which gives the same value and the same gradient. (In the NAS-Bench-201 cell
  the official code also adds the zero-valued h[i] of the unsampled ops, which sends them
  sum(dL/d out) each; a mixed op cannot add a scalar, so there they get no gradient: a deliberate
  difference.)
- ``search_model_gdas_nasnet.py`` ``genotype``: in the DARTS space, per node the 2 strongest (op,
  edge) pairs over every incoming edge and every op but ``none``, by softmax(alpha): two may share
  an edge. In NAS-Bench-201, the argmax per edge, ``none`` included (the space's rule).
- ``exps/NAS-Bench-201-algos/GDAS.py``: the weight step before the architecture step, first order;
  tau = 10 - (10 - 0.1) * epoch / (epochs - 1); 250 epochs (``GDAS.config``).
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
    weight_step_first = True  # GDAS.py: the weight step (a), then the architecture step (b)

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
        hard = F.one_hot(soft.argmax(-1), alpha.shape[-1]).to(soft.dtype)  # (E, O)
        picked = (hard * soft).sum(-1, keepdim=True)  # (E, 1): p[index]
        return hard * (1 - picked.detach() + picked)  # value: the one-hot; gradient: through p[index] only

    def genotype(self, net, space, genotype):
        if space.name != "darts":
            return genotype
        from ..spaces.darts.genotype import Genotype

        cells = {}
        for cell, w in space.cell_weights(net).items():  # softmax(alpha) (E, O)
            pairs, start = [], 0
            for i in range(net.steps):
                ranked = sorted(
                    ((float(w[start + j, o]), op, j) for j in range(i + 2) for o, op in enumerate(net.operations) if op != "none"),
                    key=lambda c: -c[0],
                )  # stable: ties keep the edge, then op, order
                pairs += [(op, j) for _, op, j in ranked[:2]]
                start += i + 2
            cells[cell] = pairs
        return Genotype(cells["normal"], genotype.normal_concat, cells["reduce"], genotype.reduce_concat)
