"""SDARTS-RS: uniform random noise on the mixing weights of the weight step, epsilon ramped over the search.

Chen & Hsieh, "Stabilizing Differentiable Architecture Search via Perturbation-based
Regularization", ICML 2020; xiangning-chen/SmoothDARTS (commit d3dbfed) ``attacker/perturb.py``
(``Random_alpha``: U(-eps, eps) added to each entry of softmax(alpha)), ``sota/cnn/model_search.py``
``clip`` (each perturbed row clamped to [0, 1], an all-zero row set to 1 at the perturbed row's
argmax, then divided by its sum: the weights stay on the simplex), ``sota/cnn/train_search.py``
(eps = 0.03 + (0.3 - 0.03) * epoch / epochs, so 0.2946 at the last of 50 epochs; the weight step
only: the architecture step runs first, unperturbed). ``nasbench201/`` is the same with 100 epochs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import SearchMethod


class SDARTSRS(SearchMethod):
    name = "sdarts-rs"
    citation = 'Chen & Hsieh, "Stabilizing Differentiable Architecture Search via Perturbation-based Regularization", ICML 2020'
    code = "xiangning-chen/SmoothDARTS"
    preset = {"sdarts_epsilon": 0.03, "sdarts_epsilon_max": 0.3}
    keys = ("sdarts_epsilon", "sdarts_epsilon_max")

    @classmethod
    def is_on(cls, hp) -> bool:
        return bool(hp.get("sdarts_epsilon"))

    @classmethod
    def check(cls, hp, operations) -> None:
        for key in cls.keys:
            if hp.get(key) is not None and hp[key] < 0:
                raise ValueError(f"{key} must be >= 0, not {hp[key]!r}")

    def __init__(self, hp, operations=()):
        super().__init__(hp, operations)
        self.epsilon = hp["sdarts_epsilon"]  # this epoch's

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        start = self.hp["sdarts_epsilon"]
        top = start if self.hp.get("sdarts_epsilon_max") is None else self.hp["sdarts_epsilon_max"]
        self.epsilon = start + (top - start) * epoch / epochs  # 0.03 -> 0.3 in the code
        return {}

    def perturb(self, weights: torch.Tensor, phase: str, seed: int) -> torch.Tensor:
        # weights: (E, O); the weight step only
        if phase != "weights" or not self.epsilon:
            return weights
        g = torch.Generator(device="cpu").manual_seed(seed)
        u = torch.rand(weights.shape, generator=g, dtype=weights.dtype).to(weights.device)  # (E, O) in [0, 1)
        return clip_rows(weights + (2 * u - 1) * self.epsilon)


def clip_rows(w: torch.Tensor) -> torch.Tensor:
    """SDARTS's ``clip``: each row (E, O) clamped to [0, 1], an all-zero row set to 1 at the unclamped
    row's argmax, then divided by its sum."""
    top = F.one_hot(w.argmax(-1), w.shape[-1]).to(w)  # (E, O): taken before the clamp, as the code does
    w = w.clamp(0, 1)
    w = torch.where((w.sum(-1, keepdim=True) == 0), top, w)
    return w / w.sum(-1, keepdim=True)
