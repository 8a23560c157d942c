"""Fair DARTS: independent sigmoid(alpha) weights (no softmax competition) and the zero-one loss.

Chu, Zhou, Zhang, Li, "Fair DARTS: Eliminating Unfair Advantages in Differentiable Architecture
Search", ECCV 2020; xiaomi-automl/FairDARTS ``separate_loss.py`` (the zero-one loss,
-mean((sigmoid(alpha) - 0.5)^2) with weight w01 = 10).
"""

from __future__ import annotations

import torch

from .base import SearchMethod


class FairDARTS(SearchMethod):
    name = "fair-darts"
    citation = 'Chu et al., "Fair DARTS: Eliminating Unfair Advantages in Differentiable Architecture Search", ECCV 2020'
    code = "xiaomi-automl/FairDARTS"
    preset = {"relaxation": "sigmoid", "zero_one_weight": 10.0}
    keys = ("zero_one_weight",)
    mixing = "sigmoid"

    @classmethod
    def is_on(cls, hp) -> bool:
        return hp.get("relaxation") == "sigmoid"

    @classmethod
    def check(cls, hp, operations) -> None:
        w01 = hp.get("zero_one_weight")
        if w01 is not None and w01 < 0:
            raise ValueError(f"zero_one_weight must be >= 0, not {w01!r}")
        if w01 and hp.get("relaxation") != "sigmoid":
            raise ValueError("zero_one_weight is Fair DARTS's loss on sigmoid(alpha): it needs relaxation='sigmoid'")

    def mix(self, alpha: torch.Tensor, sample: bool, seed: int) -> torch.Tensor:
        return torch.sigmoid(alpha)  # (E, O), every op its own weight; also what the genotype reads

    def regulariser(self, alphas: torch.Tensor, epoch: int, epochs: int) -> torch.Tensor | None:
        w01 = self.hp.get("zero_one_weight")
        return -w01 * (torch.sigmoid(alphas) - 0.5).pow(2).mean() if w01 else None
