"""SDARTS-RS: uniform random noise on the mixing weights of the weight step, epsilon ramped over the search.

Chen & Hsieh, "Stabilizing Differentiable Architecture Search via Perturbation-based
Regularization", ICML 2020; xiangning-chen/SmoothDARTS ``sota/cnn/perturb.py`` (``Random_alpha``:
U(-eps, eps) added to softmax(alpha)), ``model_search.py`` (the perturbed weights clipped to
[0, 1]), ``train_search.py`` (eps from 0.03 to 0.3 linearly over the epochs). The architecture
step sees the unperturbed weights.
"""

from __future__ import annotations

import torch

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
        return (weights + (2 * u - 1) * self.epsilon).clamp(0, 1)
