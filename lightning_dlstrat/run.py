"""Runs: the run directory, the Trainer the CLI builds, and what a finished run writes.

A run directory holds everything one ``dlstrat fit`` produced::

    runs/mlp-digits-20261130-171400/
        checkpoints/best.ckpt, last.ckpt   # written atomically (temp file + rename)
        hparams.yaml, metrics.csv          # Lightning's CSVLogger
        summary.json                       # final metrics, the exact command, versions

The CLI is a thin layer over :func:`fit`, so the Python API and the CLI run the same code.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .data import BaseDataModule, get_datamodule
from .registry import Recipe, get_recipe, load_hook


from .core import DlstratError, atomic_write_bytes, atomic_write_json, destroy_gloo_group_at_exit, mean_over_ranks  # noqa: E402,F401


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temp file and ``os.replace``.

    A run killed mid-save leaves the previous ``last.ckpt`` intact instead of a truncated one.
    """

    def save_checkpoint(self, checkpoint: dict, path: _PATH, storage_options=None) -> None:
        import io

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


# --- callbacks ---------------------------------------------------------------------------------
class RunInfo(Callback):
    """Stores which recipe and dataset made a checkpoint, and the RNG states of the run.

    The recipe and dataset names let ``dlstrat test`` rebuild both. The RNG states (torch CPU
    and CUDA, Python's ``random``; kept as tensors and tuples so the checkpoint still loads with
    ``weights_only=True``) make a resumed run draw the same dropout masks and noise as an
    uninterrupted one; Lightning itself does not save them.
    """

    def __init__(self, model: str, data: str):
        self.info = {"model": model, "data": data}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        import random

        checkpoint["dlstrat"] = dict(self.info)
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["dlstrat_rng"] = rng

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        import random

        rng = checkpoint.get("dlstrat_rng")
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])


class PlainProgress(Callback):
    """One line per epoch, for logs and CI where there is no terminal for a progress bar."""

    def __init__(self):
        self._start = time.time()

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  [{time.time() - self._start:.0f}s]", flush=True)


# --- the run -----------------------------------------------------------------------------------
@dataclass
class FitContext:
    """Everything one ``fit`` needs; the CLI fills it from flags and ``--config``."""

    model: str = "mlp"
    data: str | None = None  # None: the recipe's default dataset
    seed: int = 0
    data_dir: str = "data"
    out: str = "runs"
    trainer: dict[str, Any] = field(default_factory=dict)  # Trainer keyword arguments
    model_args: dict[str, Any] = field(default_factory=dict)
    data_args: dict[str, Any] = field(default_factory=dict)
    command: str = ""  # the exact command, recorded in summary.json
    resume: str | None = None  # checkpoint to resume from
    run_dir: Path | None = None  # set by fit()

    @property
    def recipe(self) -> Recipe:
        return get_recipe(self.model)

    @property
    def data_name(self) -> str:
        return self.data or self.recipe.default_data


def make_run_dir(out: str, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{name}-{stamp}"
    run_dir, i = base, 1
    while run_dir.exists():
        i += 1
        run_dir = base.with_name(f"{base.name}-{i}")
    run_dir.mkdir(parents=True)
    return run_dir


def build_datamodule(ctx: FitContext) -> BaseDataModule:
    args = {**ctx.recipe.data_args, "data_dir": ctx.data_dir, "seed": ctx.seed, **ctx.data_args}
    try:
        return get_datamodule(ctx.data_name, **args)
    except KeyError as e:
        raise DlstratError(e.args[0]) from None
    except TypeError as e:
        raise DlstratError(f"bad --data.KEY option for {ctx.data_name}: {e}") from None


def build_module(ctx: FitContext, dm: BaseDataModule, **overrides) -> L.LightningModule:
    """The recipe's LightningModule, sized from the datamodule (``in_shape`` / ``num_classes``)."""
    recipe = ctx.recipe
    params = recipe.module_signature().parameters
    args = dict(recipe.model_args)
    dm.setup("fit")  # folder datasets learn num_classes here
    if "in_shape" in params:
        args["in_shape"] = tuple(dm.dims)
    if "num_classes" in params and dm.num_classes:
        args["num_classes"] = dm.num_classes
    args.update(ctx.model_args)
    args.update(overrides)
    unknown = [k for k in args if k not in params]
    if unknown:
        raise DlstratError(f"unknown --model.KEY option(s) for {recipe.name}: {', '.join(unknown)}; valid: {', '.join(p for p in params if p != 'self')}")
    try:
        return recipe.module_class(**args)
    except (ValueError, TypeError) as e:
        raise DlstratError(f"{recipe.name}: {e}") from None


def build_trainer(ctx: FitContext, run_dir: Path, monitor: str | None, mode: str = "max", **overrides) -> L.Trainer:
    """A Trainer that logs and checkpoints into ``run_dir``; ``ctx.trainer`` wins over defaults."""
    callbacks: list[Callback] = [RunInfo(ctx.model, ctx.data_name)]
    callbacks.append(
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            save_last=True,
            auto_insert_metric_name=False,
        )
    )
    interactive = sys.stdout.isatty()
    callbacks.append(RichProgressBar() if interactive else PlainProgress())
    kwargs: dict[str, Any] = dict(
        max_epochs=ctx.recipe.max_epochs,
        default_root_dir=str(run_dir),
        logger=CSVLogger(save_dir=str(run_dir), name="", version=""),
        enable_progress_bar=interactive,
        enable_model_summary=interactive,
        log_every_n_steps=10,
        plugins=[AtomicCheckpointIO()],
    )
    kwargs.update(ctx.trainer)
    kwargs.update(overrides)
    kwargs["callbacks"] = callbacks + list(kwargs.get("callbacks") or [])
    try:
        return L.Trainer(**kwargs)
    except (ValueError, TypeError, RuntimeError) as e:
        raise DlstratError(f"invalid Trainer settings: {e}") from None


def versions() -> dict[str, str]:
    import lightning

    from . import __version__

    return {"lightning_dlstrat": __version__, "torch": torch.__version__, "lightning": lightning.__version__, "python": sys.version.split()[0]}


def scalar_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if not hasattr(v, "numel") or v.numel() == 1}


def fit(ctx: FitContext) -> dict[str, Any]:
    """Run one recipe end to end and return (and write) its summary."""
    recipe = ctx.recipe
    L.seed_everything(ctx.seed, workers=True, verbose=False)
    ctx.run_dir = run_dir = make_run_dir(ctx.out, f"{ctx.model}-{ctx.data_name}")
    started = time.time()
    custom_run = load_hook(recipe.run)
    if custom_run is not None:
        result = custom_run(ctx)
    else:
        result = fit_once(ctx, run_dir)
    summary = {
        "model": ctx.model,
        "data": ctx.data_name,
        "seed": ctx.seed,
        "command": ctx.command,
        "run_dir": str(run_dir),
        "wall_time_s": round(time.time() - started, 2),
        "versions": versions(),
        **result,
    }
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


def fit_once(ctx: FitContext, run_dir: Path, **module_overrides) -> dict[str, Any]:
    """Fit the recipe's module in ``run_dir``, test the best checkpoint, return the metrics."""
    recipe = ctx.recipe
    dm = build_datamodule(ctx)
    module = build_module(ctx, dm, **module_overrides)
    monitor = getattr(module, "monitor", None)
    trainer = build_trainer(ctx, run_dir, monitor, getattr(module, "mode", "max"))
    trainer.fit(module, datamodule=dm, ckpt_path=ctx.resume)
    result: dict[str, Any] = {"fit_metrics": scalar_metrics(trainer.callback_metrics)}
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path or ckpt_cb.last_model_path
    result["best_checkpoint"] = best
    result["last_checkpoint"] = ckpt_cb.last_model_path
    if recipe.test and trainer.test_loop is not None:
        tested = trainer.test(module, datamodule=dm, ckpt_path=best or None, verbose=False)
        result["test_metrics"] = scalar_metrics(tested[0]) if tested else {}
    after_fit = load_hook(recipe.after_fit)
    if after_fit is not None:
        result.update(after_fit(module, trainer, dm, run_dir) or {})
    return result
