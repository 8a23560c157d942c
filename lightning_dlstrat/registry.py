"""The model registry: what ``dlstrat fit --model NAME`` builds and how it is run.

A :class:`Recipe` names a LightningModule (imported lazily, so ``dlstrat --version`` stays fast),
the dataset and epochs it runs with by default, and what it adds to the datamodule (the bilevel
split for architecture search, [-1, 1] pixels for GANs). Modules take the data's shape through
the keyword arguments ``in_shape`` / ``num_classes`` when their ``__init__`` has them.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Recipe:
    name: str
    target: str  # "package.module:ClassName" of the LightningModule
    summary: str  # one line for `dlstrat models list`
    default_data: str = "digits"
    max_epochs: int = 10  # default trainer.max_epochs for this model
    data_args: dict[str, Any] = field(default_factory=dict)  # defaults for the datamodule
    model_args: dict[str, Any] = field(default_factory=dict)  # defaults for the module
    test: bool = True  # run trainer.test on the best checkpoint after fitting
    # Optional hooks, "module:function" strings:
    #   after_fit(module, trainer, datamodule, run_dir) -> dict merged into summary.json
    #   run(ctx: lightning_dlstrat.run.FitContext) -> dict: replaces the single fit entirely
    after_fit: str | None = None
    run: str | None = None

    @property
    def module_class(self):
        return load_target(self.target)

    def module_signature(self) -> inspect.Signature:
        return inspect.signature(self.module_class.__init__)


def load_target(target: str) -> Any:
    """Import ``"package.module:attr"``."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_hook(target: str | None) -> Callable | None:
    return None if target is None else load_target(target)


MODELS: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "mlp",
            "lightning_dlstrat.trainers.classifier:MLPClassifier",
            "multilayer perceptron classifier (784-128-10 on 28x28 input)",
            max_epochs=30,
            # cosine decay and light dropout: >= 97% test accuracy on digits over seeds 0-2
            model_args={"scheduler": "cosine", "dropout": 0.2},
        ),
        Recipe(
            "darts",
            "lightning_dlstrat.trainers.darts_search:DARTSSearch",
            "DARTS architecture search: writes genotype.json for darts-net (digits: small and quick; others: the paper's C=16, 8 cells, 50 epochs)",
            max_epochs=50,  # the paper's; the digits preset is shorter (trainers/darts_search.py SEARCH_PRESETS)
            data_args={"bilevel": True},  # {"train", "val"} batches from two disjoint halves
            after_fit="lightning_dlstrat.trainers.darts_search:after_search",
            run="lightning_dlstrat.trainers.darts_search:run_search",
        ),
        Recipe(
            "darts-net",
            "lightning_dlstrat.trainers.darts_net:DARTSNetClassifier",
            "DARTS evaluation network retrained from a genotype (--genotype FILE|RUN_DIR|DARTS_V2)",
            max_epochs=15,
            # the paper's CIFAR network is C=36, 20 cells with cutout 16 (--model.C=36 --model.layers=20
            # --model.cutout_length=16); shrunk for 8x8 digits, where a cutout hole hides a quarter of
            # the digit and costs ~0.7 points: >= 98% test accuracy over seeds 0-2 (docs/darts.md)
            model_args={"C": 8, "layers": 5, "cutout_length": 0},
            after_fit="lightning_dlstrat.trainers.darts_net:after_fit",
        ),
        Recipe(
            "random-nas",
            "lightning_dlstrat.trainers.darts_net:DARTSNetClassifier",
            "random-search baseline: best of --trials sampled DARTS genotypes, each trained as darts-net",
            max_epochs=10,  # per trial: short, the winner is retrained with darts-net
            model_args={"C": 8, "layers": 5, "cutout_length": 0},  # as darts-net
            after_fit="lightning_dlstrat.trainers.darts_net:after_fit",
            run="lightning_dlstrat.trainers.random_nas:run",
        ),
        Recipe(
            "gan",
            "lightning_dlstrat.trainers.gan:GAN",
            "GAN (non-saturating / hinge / WGAN-GP / LSGAN, EMA generator): dense nets for small images, DCGAN for larger ones, MLPs for 2-D points",
            max_epochs=50,  # datasets without a tuned length (ring8, grid25, digits: trainers/gan.py DEFAULT_EPOCHS)
            data_args={"normalization": "tanh"},  # generators end in tanh; 2-D mixtures stay in raw coordinates
            test=False,  # no test loop: the metrics come from after_fit
            after_fit="lightning_dlstrat.trainers.gan:after_fit",
            run="lightning_dlstrat.trainers.gan:run",
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]
