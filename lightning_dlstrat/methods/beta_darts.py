"""beta-DARTS: the Beta-Decay regulariser, lambda * mean over edges of logsumexp(alpha_edge), in L_val.

Ye, Li, Xu, Ouyang, Luo, Zhang, "beta-DARTS: Beta-Decay Regularization for Differentiable
Architecture Search", CVPR 2022; Sunshine-Ye/Beta-DARTS ``optimizers/darts/architect.py``
(``mlc_loss``: the log-sum-exp of each edge's alpha, the normaliser of softmax(alpha), averaged),
``nasbench201/train_search.py`` (lambda = 0 + 50 * epoch / 100: 0.5 per epoch).
"""

from __future__ import annotations

import torch

from .base import SearchMethod


class BetaDARTS(SearchMethod):
    name = "beta-darts"
    citation = 'Ye et al., "beta-DARTS: Beta-Decay Regularization for Differentiable Architecture Search", CVPR 2022'
    code = "Sunshine-Ye/Beta-DARTS"
    preset = {"beta_decay": 0.5}  # lambda grows by 0.5 per epoch (the code's 0 + 50 * epoch / 100)
    keys = ("beta_decay",)

    @classmethod
    def check(cls, hp, operations) -> None:
        if hp.get("beta_decay") is not None and hp["beta_decay"] < 0:
            raise ValueError(f"beta_decay must be >= 0, not {hp['beta_decay']!r}")

    def weight(self, epoch: int, epochs: int) -> float:
        """lambda at ``epoch``: ``beta_decay * epoch``."""
        return self.hp["beta_decay"] * epoch

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        return {"arch/beta_decay_lambda": self.weight(epoch, epochs)}

    def regulariser(self, alphas: torch.Tensor, epoch: int, epochs: int) -> torch.Tensor | None:
        # alphas: (E_total, O)
        weight = self.weight(epoch, epochs)
        return weight * torch.logsumexp(alphas, dim=-1).mean() if weight else None
