"""Recipes: how each ``dlstrat fit --model NAME`` is run.

A newcomer's route from a flag to ``Trainer.fit`` goes downward through four files:
``cli.py`` (flags) -> :func:`lightning_dlstrat.config.resolve` (one merged, checked
configuration) -> :func:`lightning_dlstrat.run.fit` (run directory, Trainer, summary) -> the
recipe's module and hooks below. Per-dataset defaults are data: ``presets/NAME.yaml``.

Python API, the same path as the CLI::

    from lightning_dlstrat.recipes import fit
    summary = fit("mlp", data="digits", trainer={"max_epochs": 5}, model={"hidden": [64]}, out="runs")
"""

from __future__ import annotations

from typing import Any

from ..config import RunConfig, resolve
from ..core import DlstratError
from ..run import fit as run_fit
from .base import Recipe
from .classifier import DARTS_NET, MLP, NB201_NET
from .darts import DARTS
from .gan import GAN_RECIPE
from .random_nas import RANDOM_NAS

RECIPES: dict[str, Recipe] = {r.name: r for r in (MLP, DARTS, DARTS_NET, RANDOM_NAS, NB201_NET, GAN_RECIPE)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise DlstratError(f"unknown model {str(name)[:80]!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]


def fit(recipe: str = "mlp", *, command: str = "", **settings: Any) -> dict[str, Any]:
    """Resolve ``settings`` (the keys of a ``--config`` file: data, model, trainer, seed, out, ...) and run the recipe.

    ``model`` and ``data`` are the module's and datamodule's arguments (``data`` may also be a
    dataset name); ``trainer`` may hold Callback objects under ``callbacks``.
    """
    data = settings.get("data")
    if isinstance(data, dict) or data is None:
        settings["data"] = {"name": None, **(data or {})}
    settings["model"] = {"name": recipe, **(settings.get("model") or {})}
    found = get_recipe(recipe)
    cfg: RunConfig = resolve(found, flags=settings)
    cfg.command = command  # what summary.json records as the command that made the run
    return run_fit(found, cfg)


__all__ = ["RECIPES", "Recipe", "fit", "get_recipe"]
