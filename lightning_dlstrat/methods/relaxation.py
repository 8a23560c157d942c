"""How a differentiable-NAS supernet turns alpha into the weights that mix each edge's operations.

DARTS (Liu et al., ICLR 2019) mixes by softmax(alpha). The collapse fixes since then change this
map, and only this map, on the supernet side (the trainer adds their losses and schedules,
:mod:`lightning_dlstrat.trainers.darts_search`):

- ``sigmoid``: Fair DARTS (Chu et al., "Fair DARTS: Eliminating Unfair Advantages in
  Differentiable Architecture Search", ECCV 2020; xiaomi-automl/FairDARTS): every operation gets
  its own independent weight sigmoid(alpha), so operations do not compete through a softmax;
- ``gumbel``: GDAS (Dong & Yang, "Searching for a Robust Neural Architecture in Four GPU Hours",
  CVPR 2019): a Gumbel-softmax sample at temperature ``tau``, hard (one operation per edge) with
  the straight-through gradient of the soft sample;
- ``dirichlet``: DrNAS (Chen et al., "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021;
  xiangning-chen/DrNAS): a reparameterised sample of Dirichlet(ELU(alpha) + 1);
- on top of any of them, ``skip_weight`` > 0 adds that much to the ``skip_connect`` weight of
  every edge: the auxiliary skip of DARTS- (Chu et al., "DARTS-: Robustly Stepping out of
  Performance Collapse Without Indicators", ICLR 2021), and ``noise`` > 0 adds uniform noise in
  [-noise, noise], clipped to [0, 1]: SDARTS-RS (Chen & Hsieh, "Stabilizing Differentiable
  Architecture Search via Perturbation-based Regularization", ICML 2020).

Sampling and noise apply to training forwards only (``sample=True``); the weights the genotype is
read from (``sample=False``) are the deterministic ones: sigmoid(alpha) for ``sigmoid``, softmax
(alpha) otherwise (as GDAS's and DrNAS's genotype parsers do), never with the auxiliary skip.
Random draws come from a generator seeded by ``seed`` (set by the trainer per step and phase), so
a search is reproducible and resumes exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("softmax", "sigmoid", "gumbel", "dirichlet")


class Relaxation:
    """Callable alpha (E, O) -> mixing weights (E, O); mutable state the trainer schedules per epoch."""

    def __init__(self, kind: str = "softmax", skip_index: int | None = None):
        if kind not in KINDS:
            raise ValueError(f"relaxation must be one of {', '.join(KINDS)}, not {kind!r}")
        self.kind = kind
        self.skip_index = skip_index  # alpha's skip_connect column (DARTS-)
        self.tau = 10.0  # Gumbel temperature (GDAS: annealed 10 -> 0.1)
        self.skip_weight = 0.0  # DARTS-'s beta (1 -> 0)
        self.noise = 0.0  # SDARTS-RS epsilon
        self.seed = 0  # this step's and phase's random stream

    def __call__(self, alpha: torch.Tensor, sample: bool) -> torch.Tensor:
        # alpha: (E, O) float32 or float64 -> (E, O)
        if self.kind == "sigmoid":
            w = torch.sigmoid(alpha)
        elif not sample or self.kind == "softmax":
            w = F.softmax(alpha, dim=-1)
        else:
            g = torch.Generator(device="cpu").manual_seed(self.seed)
            if self.kind == "gumbel":
                u = torch.rand(alpha.shape, generator=g, dtype=alpha.dtype).to(alpha.device)
                gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7)))  # (E, O) standard Gumbel
                soft = F.softmax((alpha + gumbel) / self.tau, dim=-1)
                hard = F.one_hot(soft.argmax(-1), alpha.shape[-1]).to(soft.dtype)
                w = hard - soft.detach() + soft  # the value of the one-hot, the gradient of the soft sample
            else:  # dirichlet: rsample has no generator argument; fork the global stream instead
                concentration = F.elu(alpha) + 1  # (E, O) > 0
                devices = [alpha.device] if alpha.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(self.seed)
                    w = torch.distributions.Dirichlet(concentration).rsample()
        if sample and self.skip_weight and self.skip_index is not None:
            w = w + self.skip_weight * F.one_hot(torch.tensor(self.skip_index), w.shape[-1]).to(w)
        if sample and self.noise:
            g = torch.Generator(device="cpu").manual_seed(self.seed + 1)
            u = torch.rand(w.shape, generator=g, dtype=w.dtype).to(w.device)
            w = (w + (2 * u - 1) * self.noise).clamp(0, 1)  # SDARTS's perturbation, then its clip to [0, 1]
        return w
