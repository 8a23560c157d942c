"""What a recipe is: the LightningModule a ``dlstrat fit --model NAME`` trains, its presets and hooks.

A :class:`Recipe` names its module class, reads its per-dataset presets from
``recipes/presets/NAME.yaml`` (data, shipped in the wheel), and may add hooks, plain callables,
through which the layers below learn what is particular to it (they never name a recipe):

- ``prepare(model_args, flags, data) -> made_from``: normalise module arguments while the configuration
  is resolved (darts-net turns a genotype file into its text; darts finds or measures the latency
  table a ``latency_target`` needs, for the dataset ``data``) and say what the run is made from;
- ``check(config)``: refuse settings the recipe cannot run (its ``options``), at the end of
  resolving, so bad input fails before a run directory exists;
- ``run(recipe, config, run_dir) -> dict``: replaces the single fit (random-nas fits many);
- ``after_fit(module, trainer, datamodule, run_dir) -> dict``: files and summary entries after
  fitting (genotypes, pictures, GAN metrics);
- ``method_preset(recipe, user_settings, data, variant, preset) -> preset``: one more preset layer, over
  the recipe's and under ``--config`` and flags (darts: the official recipe of the
  ``--model.method`` the user, or the preset, chose, from the yaml's ``methods`` table);
- ``variant(user_settings) -> name | None``: which of the yaml's ``variants`` tables to use in
  place of its ``all`` / ``datasets`` (darts and random-nas: the ``--model.space``, whose search
  has other settings), from the module arguments and options the user gave; None, or a name
  without a table, keeps the top-level presets. A variant may also train another module
  (``variant_modules``: random-nas trains ``nb201-net``'s for ``--model.space=nb201``), which
  :meth:`Recipe.for_variant` swaps in;
- ``resumable_without_checkpoint(run_dir) -> bool``: whether ``--resume RUN`` continues a run
  directory that has no ``checkpoints/last.ckpt`` (random-nas: a study's, which holds
  ``study.json``; its ``run`` hook then continues the study in it). Without the hook such a
  directory has nothing to resume from (:func:`lightning_dlstrat.run.find_resume`);
- ``network_from_checkpoint(checkpoint, path) -> nn.Module``: the network a ``dlstrat fit``
  checkpoint deploys, from the checkpoint already read (``weights_only=True``); gan: its EMA
  generator. Without it, :mod:`lightning_dlstrat.inference` loads the module and takes its
  ``export_network()``;
- ``run_name(config) -> str``: the first part of the run directory's name, before its time stamp,
  saying what the run is (darts: ``darts-nb201-digits`` for an NB201 search, gan:
  ``gan-cond-digits`` for a conditional GAN). Without it, ``NAME-DATA`` (:meth:`Recipe.name_of_run`).

:func:`lightning_dlstrat.run.fit` runs a recipe; :func:`lightning_dlstrat.config.resolve` merges
its preset with ``--config`` and flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import merge_presets

PRESET_KEYS = ("trainer", "model", "data", "threads", "options")



@dataclass(frozen=True)
class Recipe:
    name: str  # --model NAME
    module: type  # the LightningModule it trains
    prepare: Callable[[dict, dict, str], dict | None] | None = None
    run: Callable[..., dict[str, Any]] | None = None
    check: Callable[[Any], None] | None = None
    after_fit: Callable[..., dict[str, Any] | None] | None = None
    test: bool = True  # run trainer.test on the best checkpoint after fitting
    variant: Callable[[dict[str, Any]], str | None] | None = None
    method_preset: Callable[..., dict[str, Any]] | None = None
    variant_modules: dict[str, type] = field(default_factory=dict)  # variant -> the module it trains instead
    resumable_without_checkpoint: Callable[[Path], bool] | None = None
    network_from_checkpoint: Callable[[dict, Path], Any] | None = None
    run_name: Callable[[Any], str] | None = None

    def name_of_run(self, cfg: Any) -> str:
        """What a run directory is named after (before its time stamp): the ``run_name`` hook's answer, or ``NAME-DATA``."""
        return self.run_name(cfg) if self.run_name is not None else f"{self.name}-{cfg.data}"

    def for_variant(self, variant: str | None) -> Recipe:
        """This recipe with the module of ``variant`` (itself when the variant keeps the module)."""
        module = self.variant_modules.get(variant) if variant is not None else None
        return self if module is None or module is self.module else replace(self, module=module, variant_modules={})

    @cached_property
    def presets(self) -> dict[str, Any]:
        """``recipes/presets/NAME.yaml``, checked: summary, default_data, all, datasets, variants."""
        text = (resources.files(__package__) / "presets" / f"{self.name}.yaml").read_text()
        presets = yaml.safe_load(text)
        tables = [("", presets)] + [(f"variants.{k}.", v or {}) for k, v in (presets.get("variants") or {}).items()]
        for prefix, table in tables:
            for where, entry in [("all", table.get("all") or {})] + list((table.get("datasets") or {}).items()):
                unknown = set(entry) - set(PRESET_KEYS)
                if unknown:  # a packaging error, not a user's: fail loudly
                    raise ValueError(f"recipes/presets/{self.name}.yaml: {prefix}{where} has unknown keys {sorted(unknown)}; allowed: {PRESET_KEYS}")
        return presets

    @property
    def summary(self) -> str:
        return self.presets["summary"]

    @property
    def default_data(self) -> str:
        return self.presets["default_data"]

    def preset_for(self, data: str, variant: str | None = None) -> dict[str, Any]:
        """The preset of ``data``: the ``all`` entry, updated section by section by the dataset's own;
        both from the ``variants`` table ``variant`` when the yaml has one."""
        table = (self.presets.get("variants") or {}).get(variant) or self.presets
        return merge_presets(table.get("all") or {}, (table.get("datasets") or {}).get(data) or {})
