"""Fair DARTS: independent sigmoid(alpha) weights (no softmax competition), the zero-one loss, and a
genotype that keeps only confident operations.

Chu, Zhou, Zhang, Li, "Fair DARTS: Eliminating Unfair Advantages in Differentiable Architecture
Search", ECCV 2020; xiaomi-automl/FairDARTS (commit 270cfc9), ``fairdarts/``:

- ``genotypes.py``: 7 operations, no ``none``. Here the space keeps its ``none`` column (so the
  same supernet and genotype format serve every method), but Fair DARTS gives it weight 0 and
  leaves it out of the loss and the genotype: ``none`` outputs zeros whatever its weight, so the
  network computes what the 7-op supernet computes, and its alpha receives no gradient;
- ``model_search.py``: weights sigmoid(alpha), alpha initialised to 0;
- ``separate_loss.py``: L = CE + w01 * loss01, loss01 = -mean((sigmoid(alpha) - 0.5)^2) over every
  (edge, op) of both cell types, w01 = 10, constant;
- ``utils.py`` ``threshold_sparse`` (``--op_threshold 0.85``): per node the 2 edges of largest
  max_o sigmoid, each kept only if that maximum is at least 0.85, so a node keeps 0, 1 or 2 edges.
  A dropped edge is written here as ``('none', input)`` (it adds zero), so a sparse cell is an
  ordinary genotype and retrains with ``darts-net``. In NAS-Bench-201 (no official Fair DARTS
  search) the same rule per edge: an edge whose strongest op is below the threshold becomes ``none``;
- ``train_search.py``: first order, SGD 0.005, Adam 3e-3 with betas (0.9, 0.999), batch 128: the
  run recipe, in ``recipes/presets/darts.yaml`` (``methods.fair-darts``).
"""

from __future__ import annotations

import torch

from .base import SearchMethod


class FairDARTS(SearchMethod):
    name = "fair-darts"
    citation = 'Chu et al., "Fair DARTS: Eliminating Unfair Advantages in Differentiable Architecture Search", ECCV 2020'
    code = "xiaomi-automl/FairDARTS"
    preset = {"relaxation": "sigmoid", "zero_one_weight": 10.0, "fair_threshold": 0.85}
    keys = ("zero_one_weight", "fair_threshold")
    mixing = "sigmoid"

    @classmethod
    def is_on(cls, hp) -> bool:
        return hp.get("relaxation") == "sigmoid"

    @classmethod
    def check(cls, hp, operations) -> None:
        w01, threshold = hp.get("zero_one_weight"), hp.get("fair_threshold")
        if w01 is not None and w01 < 0:
            raise ValueError(f"zero_one_weight must be >= 0, not {w01!r}")
        if w01 and hp.get("relaxation") != "sigmoid":
            raise ValueError("zero_one_weight is Fair DARTS's loss on sigmoid(alpha): it needs relaxation='sigmoid'")
        if threshold is not None and not 0 <= threshold < 1:
            raise ValueError(f"fair_threshold (Fair DARTS's op threshold on sigmoid(alpha)) must be in [0, 1), not {threshold!r}")
        if threshold is not None and hp.get("relaxation") != "sigmoid":
            raise ValueError("fair_threshold is Fair DARTS's genotype rule on sigmoid(alpha): it needs relaxation='sigmoid'")

    def __init__(self, hp, operations=()):
        super().__init__(hp, operations)
        self.keep = torch.tensor([op != "none" for op in self.operations])  # (O,): the official space's 7 ops

    def on_build(self, net) -> None:
        with torch.no_grad():
            for a in net.arch_parameters():
                if a.dim() == 2:  # op alphas (not PC-DARTS's edge betas): 0, sigmoid 0.5, as the code starts
                    a.zero_()

    def mix(self, alpha: torch.Tensor, sample: bool, seed: int) -> torch.Tensor:
        return torch.sigmoid(alpha) * self.keep.to(alpha)  # (E, O), every op its own weight; `none` 0

    def regulariser(self, alphas: torch.Tensor, epoch: int, epochs: int) -> torch.Tensor | None:
        w01 = self.hp.get("zero_one_weight")
        if not w01:
            return None
        kept = torch.sigmoid(alphas[:, self.keep.to(alphas.device)])  # (E_total, 7): no `none`
        return -w01 * (kept - 0.5).pow(2).mean()

    def genotype(self, net, space, genotype):
        threshold = self.hp.get("fair_threshold")
        if threshold is None:
            return genotype  # the space's own rule (DARTS: top-2 edges, argmax op)
        weights = space.cell_weights(net)  # {cell: sigmoid(alpha) (E, O)}, `none` at 0
        if space.name == "nb201":
            from ..spaces.nb201 import NB201Genotype

            strength, best = weights["cell"].max(dim=1)  # (6,)
            return NB201Genotype(tuple(net.operations[int(o)] if s >= threshold else "none" for s, o in zip(strength, best)))
        return threshold_sparse(weights, net.operations, net.steps, threshold, genotype)


def threshold_sparse(weights, operations, steps: int, threshold: float, template):
    """FairDARTS's ``threshold_sparse`` for a DARTS-space cell: per node the 2 edges of largest max_o
    weight (ties to the lower input), each with its argmax op if that weight reaches ``threshold``,
    else ``('none', input)``; concatenation as ``template``'s."""
    from ..spaces.darts.genotype import Genotype

    cells = {}
    for cell, w in weights.items():  # w: (E, O)
        pairs, start = [], 0
        for i in range(steps):
            strength, best = w[start : start + i + 2].max(dim=1)  # (i + 2,): the edges into node i
            for j in sorted(range(i + 2), key=lambda j: -float(strength[j]))[:2]:
                pairs.append((operations[int(best[j])] if strength[j] >= threshold else "none", j))
            start += i + 2
        cells[cell] = pairs
    return Genotype(cells["normal"], template.normal_concat, cells["reduce"], template.reduce_concat)
