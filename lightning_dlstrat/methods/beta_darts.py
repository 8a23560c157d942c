"""beta-DARTS: the Beta-Decay regulariser, lambda * mean over edges of logsumexp(alpha_edge), in L_val.

Ye, Li, Xu, Ouyang, Luo, Zhang, "beta-DARTS: Beta-Decay Regularization for Differentiable
Architecture Search", CVPR 2022; Sunshine-Ye/Beta-DARTS ``optimizers/darts/architect.py``
(``mlc_loss``: the log-sum-exp of each edge's alpha, the normaliser of softmax(alpha), averaged),
``nasbench201/train_search.py`` (lambda = 0 + 50 * epoch / 100, the 100 a literal: 0.5 per epoch
whatever the run's length, so the official 100-epoch search ends at 49.5), commit f307704. The
code adds the term in its first-order step only (``_backward_step``; the unrolled step has none):
so does this, unless ``beta_decay_unrolled=True`` (a deliberate option, off by default). The
DARTS-space script of the release does not run beta-DARTS (it calls ``step()`` without the epoch);
the DARTS-space recipe here is the NAS-Bench-201 one's, first order, 50 epochs.
"""

from __future__ import annotations

import torch

from .base import SearchMethod


class BetaDARTS(SearchMethod):
    name = "beta-darts"
    citation = 'Ye et al., "beta-DARTS: Beta-Decay Regularization for Differentiable Architecture Search", CVPR 2022'
    code = "Sunshine-Ye/Beta-DARTS"
    preset = {"beta_decay": 0.5}  # lambda grows by 0.5 per epoch (the code's 0 + 50 * epoch / 100)
    keys = ("beta_decay", "beta_decay_unrolled")

    @classmethod
    def is_on(cls, hp) -> bool:
        return bool(hp.get("beta_decay"))

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
        if self.hp.get("order") == 2 and not self.hp.get("beta_decay_unrolled"):
            return None  # the official code's unrolled step has no Beta-Decay term
        weight = self.weight(epoch, epochs)
        return weight * torch.logsumexp(alphas, dim=-1).mean() if weight else None
