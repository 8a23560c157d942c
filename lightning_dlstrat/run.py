"""Runs: the run directory, the Trainer a recipe gets, and what a finished run writes.

A run directory holds everything one ``dlstrat fit`` produced::

    runs/mlp-digits-20261130-171400/
        config.yaml                        # the resolved configuration: `dlstrat fit --config` replays it
        checkpoints/best.ckpt, last.ckpt   # written atomically (temp file + rename)
        hparams.yaml, metrics.csv          # Lightning's CSVLogger (continued on resume)
        tensorboard/, mlflow.db, wandb/    # the other loggers --trainer.logger names, if any
        learning_curves.png                # loss and accuracy per epoch, from metrics.csv
        summary.json                       # final metrics, what it was made from, the command, versions
        .dlstrat-run, .dlstrat-lock        # the marker --resume continues in place; the lock of the process working on it
    runs/mlp-digits-latest -> mlp-digits-20261130-171400   # the newest run of that name (point_latest)

:func:`fit` runs a :class:`~lightning_dlstrat.recipes.base.Recipe` on a resolved
:class:`~lightning_dlstrat.config.RunConfig`; :func:`fit_once` is one ``Trainer.fit`` (and test)
of it, which recipes that fit several times (random-nas) call per trial. What is particular to a
recipe comes through its hooks (``recipes/base.py``); this module never names one.

Guarantees (docs/reliability.md):

- **One directory per run under DDP.** Only global rank 0 creates, names and writes the run
  directory; it is made atomically (``mkdir`` without ``exist_ok``, retried with a suffix), so
  parallel starts never share or clash. Lightning's own ``ddp`` launcher re-runs the command for
  ranks 1..N-1, which inherit the path in ``DLSTRAT_RUN_DIR``; under torchrun or SLURM the other
  ranks never touch the disk, and ModelCheckpoint and ``trainer.log_dir`` broadcast rank 0's path.
- **Resume continues the run.** ``--resume RUN`` (or ``RUN/checkpoints/last.ckpt``) trains on in
  ``RUN``: ``metrics.csv`` keeps its rows up to the checkpoint and is appended to, and
  ``summary.json`` is written there. Checkpoints are read with ``weights_only=True``, always; the
  one resumed from is found, read and checked once (:func:`find_resume`), and Lightning restores
  from that same mapping.
- **No empty run directories.** A run that fails before its first checkpoint removes its directory.
- **Resume in place only a run directory** (:func:`is_run_dir`); a bare checkpoint starts a new one.
- **One process a run**: global rank 0 holds :class:`RunLock` for the run's life.
- **Every interruption says so**: SIGINT / SIGTERM in any stage is :class:`RunInterrupted` (exit 130 / 143, the
  resume command); under DDP, SIGTERM to rank 0 ends every rank (:class:`SigtermEndsAllRanks`).
"""

from __future__ import annotations

import csv
import errno
import inspect
import io
import json
import logging
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO

from . import __version__
from .config import RunConfig, build, read_config_file
from .core import DlstratError, atomic_write_bytes, atomic_write_json, launch_rank, omp_threads, set_rng_states, shell_command, shorten
from .viz import plot_learning_curves
from .data import DATAMODULES, BaseDataModule
from .trainer_specs import Spec, callback_specs, logger_specs

LIBRARY = "lightning-dlstrat"  # the MLflow experiment runs are logged under
RUN_DIR_ENV = "DLSTRAT_RUN_DIR"  # rank 0's run directory, inherited by the ranks Lightning's ddp launcher starts


_RECEIVED: dict[str, int | None] = {"signal": None}  # the interrupting signal of this process's run, once caught


class RunInterrupted(DlstratError):
    """Ctrl-C (SIGINT) or SIGTERM during a run, in any stage; the message says where the partial run is
    and how to resume it. ``code``: the exit status, 128 + the signal (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int | None = None):
        super().__init__(message)
        self.code = 128 + int(signum or _RECEIVED["signal"] or signal.SIGINT)


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run, raised where the run is, as Ctrl-C raises KeyboardInterrupt (:class:`interruptible`)."""


class interruptible:
    """Within: SIGTERM interrupts the run as Ctrl-C does (raises :class:`Terminated`), in every stage.

    Lightning's own SIGTERM handling only sets a flag that its loops read between batches, and not
    at all outside ``fit``: a SIGTERM during the post-fit test ended the process with status 0 and
    no message. Lightning calls this handler after its own while a Trainer runs. Only the first
    SIGTERM raises; later ones, during the clean-up, are ignored. Main thread only (where Python
    delivers signals).
    """

    def __enter__(self):
        self.saved = None
        _RECEIVED["signal"] = None
        if threading.current_thread() is threading.main_thread():
            self.saved = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _on_sigterm)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            signal.signal(signal.SIGTERM, self.saved)


def _on_sigterm(signum, frame, launcher=None):
    if _RECEIVED["signal"] is not None:
        return  # already interrupted: let the clean-up finish
    _RECEIVED["signal"] = signal.SIGTERM
    if launcher is not None and getattr(launcher, "procs", None):
        launcher.kill(signal.SIGKILL)  # the ranks this process started (Lightning's ddp launcher): they write nothing
    raise Terminated()


class SigtermEndsAllRanks(Callback):
    """While a Trainer runs, SIGTERM is :func:`_on_sigterm` (as around it), not Lightning's handler.

    Lightning's handler broadcasts a tensor from inside the signal handler, at whatever point each
    rank happens to be; when that broadcast met another collective (ModelCheckpoint's
    ``all_reduce``), both ranks of a ``--devices 2 --strategy ddp`` run waited for each other
    forever (2 of 3 tries). Here rank 0 kills the ranks it started at once (SIGKILL: only rank 0
    writes, and its checkpoints are atomic), and a collective it is in fails on the closed
    connection instead of waiting; the run then ends as interrupted (exit 143, with the resume
    command). Installed at the start of each stage, after Lightning registers its own handler;
    Lightning restores the handler it found (:class:`interruptible`'s) when it tears down.
    """

    def _install(self, trainer):
        if threading.current_thread() is threading.main_thread():
            launcher = trainer.strategy.launcher
            signal.signal(signal.SIGTERM, lambda signum, frame: _on_sigterm(signum, frame, launcher))

    def on_sanity_check_start(self, trainer, pl_module):
        self._install(trainer)

    def on_train_start(self, trainer, pl_module):
        self._install(trainer)

    def on_validation_start(self, trainer, pl_module):
        self._install(trainer)

    def on_test_start(self, trainer, pl_module):
        self._install(trainer)


def interrupted_message(run_dir: Path, stage: str) -> str:
    """What an interrupted run prints: the signal, the stage, where the run is and the command that resumes it."""
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    what = "terminated (SIGTERM)" if _RECEIVED["signal"] == signal.SIGTERM else "interrupted"
    where = f"The partial run is in {run_dir}" + (" (checkpoints/last.ckpt from the last finished epoch)" if last.is_file() else "")
    how = f"resume it with: {resume_command(run_dir)}" if last.is_file() else "no epoch had finished, so there is nothing to resume"
    return f"{what} while {stage}. {where}; {how}"


class _NoAdvertisements(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger / litmodels" lines: advice about cloud
    products, printed by every Trainer, that says nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith("💡 Tip")


def quiet_lightning_tips() -> None:
    """Install :class:`_NoAdvertisements` on the loggers Lightning's ``rank_zero_info`` writes to (once)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoAdvertisements) for f in log.filters):
            log.addFilter(_NoAdvertisements())


quiet_lightning_tips()


# --- checkpoints ---------------------------------------------------------------------------------
class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, with ``last.ckpt`` written at every epoch end.

    Lightning 2.6 writes ``last.ckpt`` only in a step that also saved a best checkpoint, so an epoch
    that did not improve the monitored metric left it behind (measured: 3 mlp epochs monitored on a
    metric that never improves after the first left last.ckpt at step 21 of 63), and ``--resume``
    trained those epochs again. Earlier versions wrote it every time; this does so on every version.
    Its state is kept under ModelCheckpoint's key, so runs checkpointed before it resume as before.
    """

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._catch_up_last(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._catch_up_last(trainer)

    def _catch_up_last(self, trainer) -> None:
        # skipped when this step saved already (a best checkpoint and last.ckpt), in sanity checks and outside fit
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temp file and ``os.replace``.

    A run killed mid-save leaves the previous ``last.ckpt`` intact instead of a truncated one.
    ``preloaded``: checkpoints already read (``weights_only=True``) by :func:`find_resume`, by
    path; Lightning's own read of one of them gets that mapping instead of reading the file again.
    """

    def __init__(self, preloaded: dict[str | Path, dict[str, Any]] | None = None):
        super().__init__()
        self._preloaded = {_key(path): ckpt for path, ckpt in (preloaded or {}).items()}

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        ckpt = self._preloaded.pop(_key(path), None)  # handed over once: Lightning changes what it gets
        if ckpt is not None and weights_only:
            return ckpt
        if map_location is None:
            return super().load_checkpoint(path, weights_only=weights_only)
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)


def _key(path: str | Path) -> str:
    return str(Path(path).resolve())


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint as tensors and plain containers (``weights_only=True``), or one clear error."""
    path = Path(path)
    if not path.is_file():
        raise DlstratError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise DlstratError(f"checkpoint {path} is empty (0 bytes); it was never written completely. Use another one, e.g. last.ckpt of the run")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zips, pickles with code in them, other files
        why = " ".join(str(e).split())
        why = why.split(" Please file an issue")[0].split("(1) In PyTorch")[0].split(" Check the documentation")[0]
        raise DlstratError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {shorten(why, 300)}). Checkpoints are read as tensors and "
            "plain containers only, never as arbitrary pickles, so a damaged file or one holding code is refused."
        ) from None
    if not isinstance(ckpt, dict):
        raise DlstratError(f"{path} is not a Lightning checkpoint (it holds a {type(ckpt).__name__}, not a mapping)")
    return ckpt


def checkpoint_info(ckpt: dict[str, Any], path: str | Path) -> dict[str, str]:
    """The recipe and dataset a ``dlstrat fit`` checkpoint was made by."""
    info = ckpt.get("dlstrat")
    if not isinstance(info, dict) or not {"model", "data"} <= set(info):
        raise DlstratError(f"{path} was not written by `dlstrat fit` (it has no 'dlstrat' entry naming its model and dataset)")
    return info


# --- resuming ------------------------------------------------------------------------------------
RUN_MARKER = ".dlstrat-run"  # written into every run directory this package creates: --resume continues only those in place


def is_run_dir(folder: Path) -> bool:
    """Whether ``folder`` is a run directory this package made, which ``--resume`` may continue in place.

    It is if it holds :data:`RUN_MARKER` (written by :func:`make_run_dir`). Run directories made
    before the marker existed are recognised by both of: a ``config.yaml`` whose first line is the
    header ``dlstrat fit`` writes (``# dlstrat fit --model ...``) and ``checkpoints/last.ckpt`` (or,
    for a recipe that resumes without one, what its ``resumable_without_checkpoint`` hook checks,
    tested by :func:`find_resume`). Any other folder is the user's, and is never written to.
    """
    folder = Path(folder)
    if (folder / RUN_MARKER).is_file():
        return True
    return _written_by_dlstrat(folder / "config.yaml") and (folder / "checkpoints" / "last.ckpt").is_file()


def _written_by_dlstrat(config: Path) -> bool:
    try:
        with open(config, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith("# dlstrat fit --model ")
    except OSError:
        return False


@dataclass
class Resume:
    """A run to continue: where it is, what made it, and its checkpoint, read once (:func:`find_resume`).

    ``run_dir`` is None for a checkpoint outside any run directory: the run continues its training
    state in a new run directory, and the checkpoint's folder is left as it is.
    """

    run_dir: Path | None
    checkpoint: Path | None  # None: a run directory its recipe continues without one (random-nas: its study)
    model: str  # the recipe that made the run
    data: str | None  # its dataset (None when there is no checkpoint to name it)
    config: dict[str, Any]  # the run's config.yaml as --config reads it; the names alone if it has none
    state: dict[str, Any] | None = field(default=None, repr=False)  # the checkpoint (weights_only=True), until Lightning gets it

    @property
    def target(self) -> str:
        """What ``RunConfig.resume`` holds: the checkpoint, or the run directory."""
        return str(self.checkpoint or self.run_dir)

    def keep_until_step(self) -> int | None:
        """The last step of the CSV log the checkpoint covers; the resumed run logs the later rows again."""
        if self.state is None or self.run_dir is None:
            return None
        loops = self.state.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
        return int(loops.get("_batches_that_stepped", self.state.get("global_step", 0)))  # the CSV logger's step axis

    def hand_over(self) -> dict[str | Path, dict[str, Any]]:
        """The checkpoint for the Trainer's checkpoint reader (:class:`AtomicCheckpointIO`), given once."""
        state, self.state = self.state, None
        return {self.checkpoint: state} if state is not None and self.checkpoint is not None else {}


def find_resume(path: str | Path, model: str | None = None, recipe_of: Callable[[str], Any] | None = None) -> Resume:
    """The one place ``--resume`` is understood; the CLI (``cli.fit``) and the Python API (:func:`fit`) both call it.

    ``path``: a run directory (continued from its ``checkpoints/last.ckpt``) or one of its
    checkpoints (the run directory is then the parent of ``checkpoints/``, or the checkpoint's own
    folder), continued in place only if :func:`is_run_dir` says this package made it. A checkpoint
    anywhere else (``~/Downloads/model.ckpt``) starts a new run directory that continues its
    training state; its folder is never written to. A directory that is not a run directory is
    refused. The checkpoint is read here, once, with ``weights_only=True``, and checked: written by
    ``dlstrat fit``, and, when ``model`` is given, by that recipe. The same mapping is what
    Lightning restores from (:meth:`Resume.hand_over`). A directory without ``last.ckpt`` resumes
    only if the recipe its ``config.yaml`` names (``recipe_of(name)``) says so through its
    ``resumable_without_checkpoint`` hook (random-nas: a study's directory).
    """
    path = Path(path)
    if path.is_symlink():  # runs/NAME-latest: continue the run it points at, under the run's own name
        path = Path(os.path.realpath(path))
    if path.is_dir():
        run_dir, checkpoint = path, path / "checkpoints" / "last.ckpt"
    elif path.is_file():
        run_dir, checkpoint = (path.parent.parent if path.parent.name == "checkpoints" else path.parent), path
    else:
        raise DlstratError(f"--resume {path} does not exist; give a run directory or one of its checkpoints")
    saved = run_dir / "config.yaml"
    if checkpoint.is_file():
        state = read_checkpoint(checkpoint)
        info = checkpoint_info(state, checkpoint)
        if not is_run_dir(run_dir):
            if path.is_dir():
                raise DlstratError(
                    f"--resume {path} is not a run directory made by dlstrat (no {RUN_MARKER} in it, and no config.yaml written by "
                    "`dlstrat fit` beside checkpoints/last.ckpt), so it is not continued in place; pass the checkpoint file itself "
                    "to continue its training in a new run directory"
                )
            # a checkpoint outside any run directory: continued in a new run directory, its folder untouched
            return _checked(Resume(None, checkpoint, info["model"], info["data"], _config_of_checkpoint(state, info), state), path, model)
        config = read_config_file(saved) if saved.is_file() else {"model": info["model"], "data": info["data"]}
        found = Resume(run_dir, checkpoint, info["model"], info["data"], config, state)
    else:
        config = read_config_file(saved) if saved.is_file() else {}
        name = config.get("model", {}).get("name") if isinstance(config.get("model"), dict) else config.get("model")
        recipe = None
        if name and recipe_of is not None:
            try:
                recipe = recipe_of(name)
            except DlstratError:  # a recipe this version does not have
                recipe = None
        hook = getattr(recipe, "resumable_without_checkpoint", None)
        if hook is None or not hook(run_dir):
            raise DlstratError(f"--resume {path}: no checkpoints/last.ckpt in it; the run stopped before its first epoch ended, so there is nothing to resume from")
        if not ((run_dir / RUN_MARKER).is_file() or _written_by_dlstrat(saved)):
            raise DlstratError(f"--resume {path} is not a run directory made by dlstrat (no {RUN_MARKER} in it, and no config.yaml written by `dlstrat fit`)")
        found = Resume(run_dir, None, name, None, config)
    return _checked(found, path, model)


def _config_of_checkpoint(state: dict[str, Any], info: dict[str, str]) -> dict[str, Any]:
    """The settings a checkpoint's own module and datamodule were built with (their saved hyperparameters), as --config reads them."""
    layers = {}
    for layer, saved in (("model", "hyper_parameters"), ("data", "datamodule_hyper_parameters")):
        args = state.get(saved)
        layers[layer] = {"name": info[layer], **(dict(args) if isinstance(args, dict) else {})}
    return layers


def _checked(found: Resume, path: Path, model: str | None) -> Resume:
    if model is not None and model != found.model:
        raise DlstratError(f"--resume {path} holds a {found.model} checkpoint, not {model}; drop --model or resume a {model} run")
    return found


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
        # metrics.csv on disk up to the checkpoint: a run killed after this save loses no row
        # that its resumption would not log again
        for logger in trainer.loggers:
            logger.save()
        checkpoint["dlstrat"] = dict(self.info)
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["dlstrat_rng"] = rng

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        rng = checkpoint.get("dlstrat_rng")
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])


class FinishAtMaxSteps(Callback):
    """A run that ``max_steps`` ends inside an epoch validates and checkpoints its last step.

    Lightning stops at ``max_steps`` exactly, but validation and ModelCheckpoint run at epoch ends,
    so the last partial epoch's steps were trained and then lost: ``--trainer.max_steps=700`` on
    21 batches an epoch left best.ckpt and last.ckpt at step 693, and the test scored those. Asking
    to stop (``should_stop``) at the last step makes Lightning validate there (as it does for
    EarlyStopping), and the checkpoints follow.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


# --- logs ----------------------------------------------------------------------------------------
class _ContinuedWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued instead of deleted.

    Rows logged after the checkpoint a run resumes from (a partial epoch) are dropped, since the
    resumed run logs them again; the rest stay, so the file reads as one uninterrupted run.
    """

    def __init__(self, log_dir: str, keep_until_step: int | None):
        self.keep_until_step = keep_until_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not os.path.isfile(self.metrics_file_path):
            return  # a new run (its directory holds config.yaml already, which is no reason to warn)
        with open(self.metrics_file_path, newline="") as f:
            reader = csv.DictReader(f)
            keys, rows = list(reader.fieldnames or []), list(reader)
        # the file's columns, so rows this process adds (the test after a ddp_spawn fit, a resumed
        # run) extend the file instead of tripping over columns it did not log itself
        self.metrics_keys = keys
        if self.keep_until_step is None:
            return
        rows = [r for r in rows if r.get("step") and int(float(r["step"])) <= self.keep_until_step]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.metrics_file_path, buf.getvalue().encode())


class RunLogger(CSVLogger):
    """``metrics.csv`` and ``hparams.yaml`` in the run directory itself (no version sub-folders)."""

    def __init__(self, run_dir: str | Path, keep_until_step: int | None = None, **kwargs):
        super().__init__(save_dir=str(run_dir), name="", version="", **kwargs)  # kwargs: CSVLogger's prefix, flush_logs_every_n_steps
        self.keep_until_step = keep_until_step

    @property
    @rank_zero_experiment  # other ranks get a dummy: only rank 0 writes (or even creates) the run directory
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedWriter(self.log_dir, self.keep_until_step)
        return super().experiment


def epoch_label(trainer, epoch: int) -> str:
    """``epoch 3/15`` (counted from 1, as people count) or, for a run ended by ``max_steps`` alone, ``epoch 3``.

    The one wording of the Rich bar (:class:`RunProgressBar`) and the plain lines
    (:class:`PlainProgress`), so a terminal and a log file say the same.
    """
    of = f"/{trainer.max_epochs}" if trainer.max_epochs not in (None, -1) else ""
    return f"epoch {epoch + 1}{of}"


class RunProgressBar(RichProgressBar):
    """Lightning's Rich bar, its epochs counted as :func:`epoch_label` counts them (Lightning's own bar
    reads "Epoch 2/2" in the last of 3 epochs, and "Epoch 4/-2" in a max_steps run)."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = epoch_label(self.trainer, current_epoch).capitalize()
        if len(self.validation_description) > len(description):  # as Lightning pads it, against flicker
            description = f"{description:{len(self.validation_description)}}"
        return description


class PlainProgress(Callback):
    """One line per epoch, for logs and CI where there is no terminal for a progress bar.

    An epoch's line is printed when the next epoch starts (or training ends): by then the
    module's own epoch-end logs (DARTS's alpha, lr) and the epoch averages are in. Names of more
    than two parts (the per-edge alpha weights) go to metrics.csv only. Early in the first epoch
    one line says how long a step takes, so a slow machine is visible before an epoch ends; a
    ``max_steps`` run shows its steps (``step 120/700``).
    """

    ESTIMATE_AFTER = 5  # batches of the first epoch before the time per step is printed

    def __init__(self):
        self._start = time.time()
        self._epoch: int | None = None
        self._first_batches: float | None = None  # when the first training batch started
        self._estimated = False

    def _print(self, trainer) -> None:
        if self._epoch is None or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1 and k.count("/") < 2}
        shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        steps = f" step {trainer.global_step}/{trainer.max_steps}" if trainer.max_steps not in (None, -1) else ""
        print(f"{epoch_label(trainer, self._epoch)}{steps}  {shown}  [{time.time() - self._start:.0f}s]", flush=True)
        self._epoch = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._print(trainer)
        self._epoch = trainer.current_epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._first_batches is None:
            self._first_batches = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._estimated or not trainer.is_global_zero or batch_idx + 1 < self.ESTIMATE_AFTER:
            return
        self._estimated = True
        per_step = (time.time() - self._first_batches) / (batch_idx + 1)
        batches = trainer.num_training_batches
        left = f"; this epoch ends in about {per_step * (batches - batch_idx - 1):.0f} s" if batches not in (None, float("inf")) else ""
        total = f" of {batches}" if batches not in (None, float("inf")) else ""
        print(f"{epoch_label(trainer, trainer.current_epoch)}: {batch_idx + 1}{total} batches in, {per_step:.2f} s a batch{left}", flush=True)

    def on_train_end(self, trainer, pl_module):
        self._print(trainer)


# --- the run directory ---------------------------------------------------------------------------
def make_run_dir(out: str | Path, name: str) -> Path:
    """``out/NAME-YYYYmmdd-HHMMSS[-k]``, created atomically: concurrent calls get distinct folders."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{name}-{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        run_dir = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            run_dir.mkdir()  # exist_ok=False: exactly one caller wins each name
        except FileExistsError:
            continue
        (run_dir / RUN_MARKER).write_text(f"a run directory of lightning-dlstrat {__version__}: `dlstrat fit --resume` continues it in place\n")
        return run_dir
    raise DlstratError(f"could not create a run directory under {out}: 10,000 names taken")


def open_run_dir(cfg: RunConfig, name: str | None = None) -> tuple[Path, bool]:
    """``(run_dir, created)``: rank 0 creates it (or reuses a resumed one); other ranks only learn the path.

    ``name``: what the directory is named after, before its time stamp (the recipe's
    ``name_of_run``: ``darts-nb201-digits``); default ``MODEL-DATA``.
    """
    if cfg.run_dir:
        return Path(cfg.run_dir), False
    name = name or f"{cfg.model}-{cfg.data}"
    if launch_rank() != 0:
        # ranks 1..N-1 of Lightning's ddp launcher inherit rank 0's path; under torchrun / SLURM a
        # placeholder that is never created: everything written goes through rank 0
        return Path(os.environ.get(RUN_DIR_ENV) or Path(cfg.out) / f".rank{launch_rank()}-of-{name}"), False
    try:
        run_dir = make_run_dir(cfg.out, name)
    except OSError as e:
        raise DlstratError(f"cannot create a run directory under --out {cfg.out}: {e.strerror or e}") from None
    point_latest(run_dir, name)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir, True


LATEST = "latest"  # out/NAME-latest: a link to the newest run directory of that name


def latest_link(run_dir: Path, name: str) -> Path:
    """``out/NAME-latest`` beside ``run_dir`` (``runs/darts-digits-latest``)."""
    return Path(run_dir).parent / f"{name}-{LATEST}"


def point_latest(run_dir: Path, name: str) -> None:
    """Point ``out/NAME-latest`` at ``run_dir`` (a relative symbolic link, replaced atomically).

    So README and scripts name "the newest darts-digits run" as ``runs/darts-digits-latest``
    however many runs the folder holds (a glob ``runs/darts-digits-*`` matches them all). The
    link is made when the run starts, so ``--resume runs/NAME-latest`` continues an interrupted
    run; a run that leaves nothing behind points it back (:func:`discard_run_dir`). On a file
    system without symbolic links there is no pointer, and nothing fails.
    """
    link = latest_link(run_dir, name)
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(Path(run_dir).name, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)


def discard_run_dir(run_dir: Path) -> None:
    """Remove a run directory that holds nothing to keep, and point its ``NAME-latest`` link back at the newest run left."""
    run_dir = Path(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    for link in run_dir.parent.glob(f"*-{LATEST}"):
        if link.is_symlink() and os.readlink(link) == run_dir.name:
            name = link.name.removesuffix(f"-{LATEST}")
            left = sorted(p for p in run_dir.parent.glob(f"{name}-*") if p.is_dir() and not p.is_symlink() and (p / RUN_MARKER).is_file()
                          and p.name[len(name) + 1:][:1].isdigit())  # NAME-YYYYmmdd-..., not NAME-other-...
            if left:
                point_latest(left[-1], name)
            else:
                link.unlink(missing_ok=True)


RUN_LOCK = ".dlstrat-lock"  # the run's lock file: flock'ed by the process that works on the run, which wrote its pid and host there


class RunLock:
    """An exclusive ``flock`` on ``RUN/.dlstrat-lock`` for the life of a run (global rank 0 only).

    A second process on the same run (two ``--resume`` of it) is refused with the holder's pid and
    host, before it writes anything. The kernel drops the lock when its process ends in any way,
    SIGKILL included, so a crashed run never leaves a stale lock. ``flock`` on a network file system
    is only as good as that file system's locking (NFS v4: yes; some others: local to one machine).
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / RUN_LOCK
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl
        import socket

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # a file system without flock: run unlocked
                os.close(fd)
                return self
            holder = " ".join(os.pread(fd, 200, 0).decode(errors="replace").split()) or "another process"
            os.close(fd)
            raise DlstratError(
                f"the run directory {self.path.parent} is in use by {holder} (another `dlstrat fit` works on it, e.g. a second "
                "--resume of the same run); two processes on one run would interleave its metrics.csv and checkpoints. Wait for "
                "that process to end, or stop it and resume again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


# --- building the parts --------------------------------------------------------------------------
def build_datamodule(cfg: RunConfig) -> BaseDataModule:
    return build(DATAMODULES[cfg.data], cfg.data_args, f"dataset {cfg.data}")


def build_module(recipe, cfg: RunConfig, **overrides) -> L.LightningModule:
    """The recipe's LightningModule with the resolved arguments (the data's shape is among them)."""
    return build(recipe.module, {**cfg.model_args, **overrides}, recipe.name)


def take_built(recipe, cfg: RunConfig, module_overrides: dict[str, Any]) -> tuple[BaseDataModule, L.LightningModule] | None:
    """The datamodule and module :func:`~lightning_dlstrat.config.resolve` built for ``cfg``, if they are this run's.

    They are when nothing has changed since (the recipe's module, its arguments, the data's, the
    seed) and no argument is overridden (a trial's genotype); the global RNGs then continue from
    where building left them, so the run is bit for bit the one that builds its own. Taken once:
    a second fit of the same configuration builds afresh.
    """
    built, cfg.built = cfg.built, None
    if built is None or module_overrides or type(built.module) is not recipe.module:
        return None
    if (built.seed, built.model_args, built.data_args) != (cfg.seed, cfg.model_args, cfg.data_args):
        return None
    set_rng_states(built.rng_after)
    return built.datamodule, built.module


def build_loggers(value: Any, cfg: RunConfig, run_dir: Path, keep_until_step: int | None = None) -> list[Logger]:
    """The loggers ``--trainer.logger`` names (:mod:`lightning_dlstrat.trainer_specs`), all writing into ``run_dir``.

    The CSV log is ``run_dir/metrics.csv`` (:class:`RunLogger`, first whenever any logger is on).
    The others get the run directory unless their ``init_args`` say otherwise: TensorBoard writes
    ``RUN/tensorboard/`` (a resumed run adds an event file there, on the same step axis), MLflow a
    SQLite store ``RUN/mlflow.db`` with artifacts in ``RUN/mlartifacts/`` (unless ``MLFLOW_TRACKING_URI``,
    ``tracking_uri`` or ``save_dir`` says otherwise), Weights & Biases ``RUN/wandb/`` with the run directory's name as the run's name
    and id, so a resumed run continues the same W&B run. Lightning's loggers write on global rank 0 only.
    """
    loggers: list[Logger] = []
    for spec in logger_specs(value):
        if isinstance(spec, Logger):  # an object, from the Python API
            loggers.append(spec)
            continue
        if spec.name == "csv":
            loggers.append(RunLogger(run_dir, keep_until_step, **spec.init_args))
            continue
        if spec.is_a("TensorBoardLogger"):
            # no hp_metric: Lightning logs a placeholder -1 there unless told otherwise
            defaults: dict[str, Any] = dict(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
        elif spec.is_a("MLFlowLogger"):
            defaults = dict(experiment_name=LIBRARY, run_name=run_dir.name)
            if os.environ.get("MLFLOW_TRACKING_URI"):
                # read now: Lightning's default is os.getenv at its import, which misses a later setting
                defaults.update(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
            elif not {"tracking_uri", "save_dir"} & set(spec.init_args):
                # MLflow 3 keeps its ./mlruns file store only in maintenance mode (and refuses it by
                # default): an SQLite store in the run directory, its artifacts beside it
                defaults.update(tracking_uri=mlflow_sqlite_uri(run_dir), artifact_location=str((run_dir / "mlartifacts").resolve()))
        elif spec.is_a("WandbLogger"):
            defaults = dict(save_dir=str(run_dir), name=run_dir.name, id=run_dir.name)
        else:
            defaults = dict(save_dir=str(run_dir))
        params = inspect.signature(spec.cls.__init__).parameters
        takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
        args = {**{k: v for k, v in defaults.items() if k in params or takes_any}, **spec.init_args}
        loggers.append(construct(spec, args, "--trainer.logger"))
    return loggers


def mlflow_sqlite_uri(run_dir: Path) -> str:
    """The tracking URI of an MLflow SQLite store in ``run_dir`` (``RUN/mlflow.db``): ``mlflow ui --backend-store-uri`` takes it."""
    return f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}"


def construct(spec, args: dict[str, Any], flag: str):
    """``spec.cls(**args)``, with what its constructor refuses as one clear message."""
    try:
        return spec.cls(**args)
    except Exception as e:  # TypeError, ValueError, MisconfigurationException, a missing package, ...
        raise DlstratError(f"{flag}: {spec.cls.__name__}({shorten(args, 200)}) failed: {type(e).__name__}: {shorten(str(e), 1000)}") from None


def build_trainer(
    cfg: RunConfig, run_dir: Path, monitor: str | None, mode: str = "max", keep_until_step: int | None = None,
    preloaded: dict[str | Path, dict[str, Any]] | None = None,
) -> L.Trainer:
    """A Trainer that logs and checkpoints into ``run_dir``; ``cfg.trainer`` wins over the defaults here.

    ``--trainer.callbacks`` are added after the run's own; a ModelCheckpoint entry there sets the
    run's checkpoint instead (see :mod:`lightning_dlstrat.trainer_specs`), and a progress bar
    callback replaces the default one. ``preloaded``: checkpoints already read, by path, which the
    Trainer restores from without reading them again.
    """
    settings = dict(cfg.trainer)
    interactive = sys.stdout.isatty()
    progress_bar = settings.pop("enable_progress_bar", True)  # a bar in a terminal, one line an epoch elsewhere
    loggers = build_loggers(settings.pop("logger", True), cfg, run_dir, keep_until_step)
    checkpoint_args: dict[str, Any] = dict(
        monitor=monitor, mode=mode, save_top_k=1, filename="best", auto_insert_metric_name=False,
    )
    extra_callbacks: list[Callback] = []
    for spec in callback_specs(settings.pop("callbacks", None)):
        if isinstance(spec, Callback):  # an object, from the Python API
            extra_callbacks.append(spec)
        elif spec.is_a("ModelCheckpoint"):
            checkpoint_args.update(spec.init_args)
            if checkpoint_args["save_top_k"] != 1 and "filename" not in spec.init_args:
                checkpoint_args["filename"] = "best-epoch{epoch}-step{step}"  # several best files need several names
        else:
            extra_callbacks.append(construct(spec, spec.init_args, "--trainer.callbacks"))
    callbacks: list[Callback] = [
        RunInfo(cfg.model, cfg.data),
        FinishAtMaxSteps(),
        SigtermEndsAllRanks(),
        construct(
            Spec(RunCheckpoint), dict(
                dirpath=run_dir / "checkpoints", save_last=True, **checkpoint_args,
                enable_version_counter=False,  # a resumed run overwrites its best.ckpt (atomically) instead of adding best-v1.ckpt
            ), "--trainer.callbacks ModelCheckpoint",
        ),
    ]
    own_bar = any(isinstance(c, ProgressBar) for c in extra_callbacks)
    if own_bar:  # the user's bar replaces the default one (Lightning refuses two)
        progress_bar, interactive_bar = True, True
    else:
        interactive_bar = bool(progress_bar and interactive)
        if progress_bar:
            callbacks.append(RunProgressBar() if interactive else PlainProgress())
    kwargs: dict[str, Any] = dict(
        default_root_dir=str(run_dir),
        logger=loggers or False,
        enable_progress_bar=interactive_bar,
        enable_model_summary=interactive,
        log_every_n_steps=10,
        plugins=[AtomicCheckpointIO(preloaded)],
        callbacks=callbacks + extra_callbacks,
    )
    kwargs.update(settings)
    try:
        return L.Trainer(**kwargs)
    except Exception as e:  # Lightning's MisconfigurationException and ValueErrors for bad settings
        raise DlstratError(f"invalid Trainer settings: {shorten(str(e), 400)}") from None


def versions() -> dict[str, str]:
    return {"lightning_dlstrat": __version__, "torch": torch.__version__, "lightning": L.__version__, "python": sys.version.split()[0]}


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """Scalar metrics for summary.json; names of three parts or more (DARTS's per-edge alpha) stay in metrics.csv."""
    return {k: float(v) for k, v in metrics.items() if (not hasattr(v, "numel") or v.numel() == 1) and k.count("/") < 2}


# --- the run -------------------------------------------------------------------------------------
def fit(recipe, cfg: RunConfig, resume: Resume | None = None) -> dict[str, Any]:
    """Run ``recipe`` end to end on ``cfg`` and return (and, on rank 0, write) its summary.

    ``resume``: the run to continue, as :func:`find_resume` found it (the CLI's ``--resume``); the
    Python API's ``cfg.resume`` (a run directory or checkpoint) is found the same way here.
    """
    if resume is None and cfg.resume:
        resume = find_resume(cfg.resume, cfg.model, {recipe.name: recipe}.get)
    if resume is not None:  # continue in the run's own directory (a bare checkpoint: in a new one)
        cfg.resume = resume.target
        if resume.run_dir is not None:
            cfg.run_dir = str(resume.run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    threads, threads_from = choose_threads(cfg)
    run_dir, created = open_run_dir(cfg, recipe.name_of_run(cfg))
    rank0 = launch_rank() == 0
    lock = RunLock(run_dir).acquire() if rank0 else None  # one process a run, for its whole life
    try:
        with interruptible():
            return _fit_locked(recipe, cfg, resume, run_dir, created, rank0, threads, threads_from)
    finally:
        if lock is not None:
            lock.release()


def _fit_locked(recipe, cfg: RunConfig, resume: Resume | None, run_dir: Path, created: bool, rank0: bool, threads: int, threads_from: str) -> dict[str, Any]:
    started, stage = time.time(), "starting the run"
    if rank0:
        print(starting_line(cfg, run_dir, threads, threads_from, resumed=resume is not None), flush=True)
    try:
        with run_threads(threads):
            if rank0:
                atomic_write_bytes(run_dir / "config.yaml", cfg.to_yaml().encode())
            stage = "training"
            result = recipe.run(recipe, cfg, run_dir) if recipe.run is not None else fit_once(recipe, cfg, run_dir, resume=resume)
            stage = "finishing the run"
            if rank0:
                result["pictures"] = pictures_of(run_dir)
            summary = _summary(cfg, run_dir, started, threads, threads_from, result)
            if rank0:
                atomic_write_json(run_dir / "summary.json", summary)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM outside a Trainer (writing config.yaml, pictures, summary.json)
        if created and rank0 and not any(run_dir.rglob("*.ckpt")):
            discard_run_dir(run_dir)
        raise RunInterrupted(interrupted_message(run_dir, stage)) from None
    except BaseException:
        # a run that failed before its first checkpoint leaves nothing behind
        if created and rank0 and not any(run_dir.rglob("*.ckpt")):
            discard_run_dir(run_dir)
        raise
    return summary


def _summary(cfg: RunConfig, run_dir: Path, started: float, threads: int, threads_from: str, result: dict[str, Any]) -> dict[str, Any]:
    shown = picture_summary(result.get("pictures", []))
    if shown:
        result["report"] = [*result.get("report", []), f"pictures: {shown}"]
    return {
        "model": cfg.model,
        "data": cfg.data,
        "seed": cfg.seed,
        "command": cfg.command,
        "run_dir": str(run_dir),
        "made_from": {"recipe": cfg.model, **cfg.made_from},
        "wall_time_s": round(time.time() - started, 2),
        "threads": {"count": threads, "from": threads_from},
        "versions": versions(),
        **result,
    }


# --- threads ---------------------------------------------------------------------------------------
def choose_threads(cfg: RunConfig) -> tuple[int, str]:
    """The intra-op threads a run uses and where that number came from, in this order:

    1. ``--threads N`` (or the Python API's ``threads=N``): the user said so for this run;
    2. ``OMP_NUM_THREADS`` in the environment: the user (or a launcher, a batch system) said so for this machine;
    3. the configuration's ``threads`` (the recipe's preset for the dataset, or a ``--config`` file);
    4. torch's default (one per core).

    The presets choose from measurements (docs/benchmarks.md, "Threads"): the digits networks are
    small, a second thread gains nothing on them and costs up to 10x on a busy machine.
    """
    env = omp_threads()
    if cfg.threads and cfg.threads_from == "--threads":
        return cfg.threads, "--threads"
    if env is not None:
        return env, "OMP_NUM_THREADS"
    if cfg.threads:
        return cfg.threads, cfg.threads_from or "preset"
    return torch.get_num_threads(), "torch's default"


class run_threads:
    """Within: torch uses ``n`` intra-op threads, and processes the run starts (DDP ranks, ddp_spawn
    workers, data-loader workers) inherit ``OMP_NUM_THREADS=n``; after: both as before."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.saved = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
        torch.set_num_threads(self.n)
        os.environ["OMP_NUM_THREADS"] = str(self.n)
        return self

    def __exit__(self, *exc):
        threads, env = self.saved
        torch.set_num_threads(threads)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


def device_words(trainer: dict[str, Any]) -> str:
    """What the run will train on, in words, before a Trainer exists: ``cpu``, ``cuda x 2``, ``gpu (auto)``."""
    accelerator = str(trainer.get("accelerator") or "auto")
    devices = trainer.get("devices", "auto")
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else ("mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu")
    count = "" if devices in ("auto", 1, "1", None) else f" x {devices}"
    strategy = trainer.get("strategy")
    return f"{accelerator}{count}" + (f", {strategy}" if strategy not in (None, "auto") else "")


def starting_line(cfg: RunConfig, run_dir: Path, threads: int, threads_from: str, resumed: bool = False) -> str:
    """The first line a run prints, before anything is trained: what runs, on what, where it writes."""
    t = cfg.trainer
    length = " and ".join(f"{t[k]} {k.removeprefix('max_').removesuffix('s' if t[k] == 1 else '')}" for k in ("max_epochs", "max_steps") if t.get(k) not in (None, -1))
    how = {"--threads": "--threads", "OMP_NUM_THREADS": "OMP_NUM_THREADS", "preset": "the preset", "--config": "--config"}.get(threads_from, threads_from)
    return (
        f"{'resuming' if resumed else 'starting'} {cfg.model} on {cfg.data}" + (f" ({length})" if length else "")
        + f": {device_words(t)}, {threads} thread{'s' if threads != 1 else ''} ({how}), run directory {run_dir}"
    )


# --- pictures ----------------------------------------------------------------------------------------
def pictures_of(run_dir: Path) -> list[str]:
    """Every PNG a run wrote, relative to its directory, sorted (summary.json's ``pictures``)."""
    return sorted(p.relative_to(run_dir).as_posix() for p in Path(run_dir).rglob("*.png"))


def picture_summary(pictures: list[str]) -> str:
    """The pictures in one line: those at the top level by name, each folder as ``FOLDER/ (N)``."""
    top = [p for p in pictures if "/" not in p]
    folders: dict[str, int] = {}
    for p in pictures:
        if "/" in p:
            folders[p.split("/")[0]] = folders.get(p.split("/")[0], 0) + 1
    return ", ".join(top + [f"{name}/ ({n})" for name, n in folders.items()])


def stop_reason(trainer) -> str:
    """Why ``trainer.fit`` returned, in words: an EarlyStopping callback, ``max_steps``, ``max_epochs``,
    or the module's own ``trainer.should_stop`` (a recipe's ``after_fit`` may name it better)."""
    for cb in trainer.callbacks:
        if isinstance(cb, EarlyStopping) and cb.stopped_epoch:
            why = " ".join(str(cb.stopping_reason_message or "").split()) or f"{cb.monitor} stopped improving"
            return f"EarlyStopping after epoch {cb.stopped_epoch + 1}: {why}"
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return f"max_steps={trainer.max_steps} reached (global step {trainer.global_step}, in epoch {trainer.current_epoch})"
    if trainer.max_epochs not in (None, -1) and trainer.current_epoch >= trainer.max_epochs:
        return f"max_epochs={trainer.max_epochs} reached (global step {trainer.global_step})"
    if trainer.should_stop:
        return f"the module stopped the run in epoch {trainer.current_epoch} (trainer.should_stop)"
    return f"after epoch {trainer.current_epoch}, global step {trainer.global_step}"


def fit_once(recipe, cfg: RunConfig, run_dir: Path, *, resume: Resume | None = None, **module_overrides) -> dict[str, Any]:
    """Fit the recipe's module in ``run_dir``, test the best checkpoint, return the metrics.

    ``resume``: the checkpoint to continue from (:func:`find_resume`; found from ``cfg.resume``
    when not given); ``module_overrides``: module arguments over ``cfg.model_args`` (a trial's genotype).
    """
    if resume is None and cfg.resume:
        resume = find_resume(cfg.resume, cfg.model, {recipe.name: recipe}.get)
    reused = take_built(recipe, cfg, module_overrides)
    dm, module = reused if reused is not None else (build_datamodule(cfg), build_module(recipe, cfg, **module_overrides))
    keep = resume.keep_until_step() if resume is not None else None
    preloaded = resume.hand_over() if resume is not None else None
    trainer = build_trainer(cfg, run_dir, getattr(module, "monitor", None), getattr(module, "mode", "max"), keep, preloaded)
    with _stage(trainer, run_dir, "training"):
        trainer.fit(module, datamodule=dm, ckpt_path=resume.checkpoint if resume is not None else None, weights_only=True)
    result: dict[str, Any] = {"fit_metrics": scalar_metrics(trainer.callback_metrics), "stopped": stop_reason(trainer)}
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path or ckpt_cb.last_model_path
    result["best_checkpoint"] = best
    result["last_checkpoint"] = ckpt_cb.last_model_path
    if recipe.test and trainer.test_loop is not None:
        with _stage(trainer, run_dir, "testing"):
            tested = trainer.test(module, datamodule=dm, ckpt_path=best or None, verbose=False, weights_only=True)
        result["test_metrics"] = scalar_metrics(tested[0]) if tested else {}
    with _stage(trainer, run_dir, "finishing the run"):
        if recipe.after_fit is not None:
            result.update(recipe.after_fit(module, trainer, dm, run_dir) or {})
        if trainer.is_global_zero and (run_dir / "metrics.csv").is_file():
            plot_learning_curves(run_dir / "metrics.csv", run_dir / "learning_curves.png", title=run_dir.name)
    result["report"] = [f"stopped: {result['stopped']}", *result.get("report", [])]
    return result


class _stage:
    """Within: Ctrl-C or SIGTERM ends the stage as :class:`RunInterrupted` (exit 130 / 143, with the resume command).

    Lightning turns Ctrl-C into ``SystemExit(1)`` and its own SIGTERM into ``SystemExit(0)``
    (``SIGTERMException``), marking the Trainer interrupted; outside ``fit`` / ``test`` they are
    KeyboardInterrupt (:class:`Terminated` for SIGTERM, :class:`interruptible`).
    """

    def __init__(self, trainer, run_dir: Path, stage: str):
        self.trainer, self.run_dir, self.stage = trainer, run_dir, stage

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if kind is None:
            return False
        signalled = _RECEIVED["signal"] is not None and issubclass(kind, Exception)  # a collective that failed as the other ranks were ended
        if signalled or issubclass(kind, KeyboardInterrupt) or (issubclass(kind, SystemExit) and self.trainer.interrupted):
            if getattr(self.trainer, "received_sigterm", False) and _RECEIVED["signal"] is None:
                _RECEIVED["signal"] = signal.SIGTERM  # Lightning's own SIGTERM handling (no interruptible() around it)
            raise RunInterrupted(interrupted_message(self.run_dir, self.stage)) from None
        return False


def resume_command(run_dir: str | Path) -> str:
    """``dlstrat fit --resume RUN``, quoted for pasting into a shell."""
    return shell_command("dlstrat", "fit", "--resume", run_dir)


def summary_of(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's ``summary.json``."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise DlstratError(f"{run_dir} is not a finished run directory (no summary.json); pass the folder `dlstrat fit` printed")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DlstratError(f"{path} is not valid JSON ({e})") from None
