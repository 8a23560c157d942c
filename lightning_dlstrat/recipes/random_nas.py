"""Random search over a cell search space, as an Optuna study: the baseline every NAS method should beat.

Li & Talwalkar ("Random Search and Reproducibility for Neural Architecture Search", UAI 2019)
showed that sampling architectures uniformly and training each briefly is a strong baseline for
DARTS. ``random-nas`` runs that loop as an Optuna study (:mod:`lightning_dlstrat.study`) in the
space ``--model.space`` names (:mod:`lightning_dlstrat.spaces`): each trial draws a genotype
through Optuna's distributions (``space.choices()``: DARTS, per node 2 distinct inputs and an op
other than ``none`` for each; NAS-Bench-201, one of its 5 ops per edge), trains it with the
space's retrain recipe (``darts-net`` or ``nb201-net``) in its own sub-directory from the same
seed, and reports its validation accuracy; the study keeps the best. Options (each also spelled
``--model.KEY``)::

    --trials N                  # N trials in the whole study, over all its workers
    --model.space=darts         # darts | nb201: the space, and the module and presets the trials train
    --model.sampler=random      # random (seeded by --seed) | tpe | nsga2 (accuracy up, the second objective down)
    --model.objective=params    # nsga2's second objective: params | latency (measured here: CPU, eager torch, batch 1)
    --model.pruner=none         # none | median | hyperband: stop trials early on per-epoch val/acc
    --model.storage=URL|PATH    # default RUN/study.journal; a database URL shares the study between machines
    --model.study=NAME          # default random-nas (embedded) or random-nas-DATA (shared storage)

and writes::

    RUN/trial-NNN/              # a darts-net / nb201-net run per trial this worker ran (NNN: the study's trial number)
    RUN/study.journal           # the embedded study: `dlstrat fit --resume RUN` continues it
    RUN/trials.json, trials.csv # every trial of the study: state, val / test metrics, parameters, genotype
    RUN/*.png                   # Optuna's plots (optimisation history, parallel coordinates, Pareto front)
    RUN/genotype.json, .png     # the winner, for `dlstrat fit --model darts-net|nb201-net --genotype RUN`

Selection uses validation data only. The test accuracy of every trial is recorded for analysis
(how well short-training validation ranks architectures), but the run's ``test_metrics`` are
those of the selected trial.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import optuna

from ..config import RunConfig
from ..core import DlstratError, atomic_write_bytes, atomic_write_json, launch_rank, shell_command, shorten
from ..run import RunInterrupted, fit_once, resume_command
from ..study import (
    METRIC, STUDY_FILE, STUDY_INFO, WorkerLock, awaited_trials, budget_used, check_options, disk_error, fail_stale, fingerprint, format_table, is_url, make_pruner,
    genotype_of, masked, open_storage, open_study, retry, suggest_genotype, winner, write_plots, write_tables,
)
from ..spaces import SPACES, get_space
from .base import Recipe
from .classifier import DARTS_NET, NB201_NET
from .darts import space_of

# what a trial of each space trains with (a space's `retrain_recipe`; a new space lists its own here)
TRIAL_RECIPES = {r.name: r for r in (DARTS_NET, NB201_NET)}


class TrialFailed(Exception):
    """A trial's own error (out of memory, a network that does not fit): recorded as failed, the study goes on."""


class Surplus(Exception):
    """Other workers filled the budget while this one opened a trial: told failed at once, never trained."""


def prepare(model_args: dict[str, Any], given: dict[str, Any], data: str) -> None:
    """Trials sample their own genotypes: the module argument is not the user's to give."""
    if "genotype" in given:
        raise DlstratError("random-nas samples its own genotypes; drop --genotype (use --model darts-net to train a given one)")
    model_args.pop("genotype", None)


def check(cfg: RunConfig) -> None:
    """The study's options, and one process per trial (several devices: one worker each, on one study)."""
    check_options(cfg.options)
    cfg.options["space"] = space_of(cfg.options)  # the canonical name ("NAS-Bench-201" -> "nb201"), checked
    t = cfg.trainer
    devices, strategy = t.get("devices", 1), str(t.get("strategy") or "auto")
    if isinstance(devices, str) and devices.strip() == "auto":
        import torch

        devices = torch.cuda.device_count() if torch.cuda.is_available() else 1
    many = (
        (isinstance(devices, int) and not isinstance(devices, bool) and (devices > 1 or devices == -1))
        or (isinstance(devices, (list, tuple)) and len(devices) > 1)
        or (isinstance(devices, str) and (len([d for d in devices.split(",") if d.strip()]) > 1 or devices.strip() == "-1"))
        or (t.get("num_nodes") or 1) > 1
        or strategy.startswith(("ddp", "fsdp", "deepspeed"))
    )
    if many:
        raise DlstratError(
            "random-nas trains each trial in one process on one device; to use several devices, start one worker per device on a "
            "shared study, e.g. CUDA_VISIBLE_DEVICES=1 dlstrat fit --model random-nas --model.storage=STUDY.journal (docs/darts.md, "
            "'On a cluster')"
        )
    if t.get("limit_val_batches") in (0, 0.0):
        raise DlstratError("random-nas chooses trials by validation accuracy; do not disable validation (--trainer.limit_val_batches=0)")


def is_study_dir(run_dir: Path) -> bool:
    """``--resume RUN`` of a study's directory (it holds study.json) continues the study, with or without a checkpoint."""
    return (Path(run_dir) / STUDY_INFO).is_file()


def run(recipe: Recipe, cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Run (or continue, or join) the study until it holds ``--trials`` trials; return the winner's summary."""
    opts = cfg.options
    trials = opts["trials"]
    space = get_space(opts["space"])
    trial_recipe = TRIAL_RECIPES[space.retrain_recipe]
    embedded = opts["storage"] is None
    spec = str(run_dir / STUDY_FILE) if embedded else opts["storage"]
    name = opts["study"] or ("random-nas" if embedded else f"random-nas-{cfg.data}")
    storage = open_storage(spec, opts["heartbeat"])
    lock_folder = None if is_url(spec) else Path(spec + ".workers")
    two = opts["sampler"] == "nsga2"
    pruner = make_pruner(opts["pruner"], cfg.trainer.get("max_epochs"))
    study, _ = open_study(storage, name, opts["sampler"], cfg.seed, trials, pruner, fingerprint(cfg))
    where = "study.journal" if embedded else (masked(spec) if is_url(spec) else str(Path(spec).resolve()))
    info = {"study": name, "storage": where, "space": space.name, "sampler": opts["sampler"], "pruner": opts["pruner"], "trials": trials}
    if launch_rank() == 0:
        atomic_write_json(run_dir / STUDY_INFO, info)
    host = socket.gethostname()

    def objective(trial) -> float | tuple[float, int]:
        if lock_folder is not None:
            fail_stale(study, lock_folder)  # databases do this through the heartbeat, before each trial
        done = budget_used(study.get_trials(deepcopy=False), before=trial.number)
        if done >= trials:
            trial.set_user_attr("surplus", True)
            study.stop()
            raise Surplus(f"the study's {trials} trials were taken by other workers")
        trial.set_user_attr("host", host)
        trial.set_user_attr("worker", f"{host}:{os.getpid()}")
        if lock is not None:
            trial.set_user_attr("lock", lock.name)
        genotype = suggest_genotype(trial, space)
        trial_dir = run_dir / f"trial-{trial.number:03d}"
        trial.set_user_attr("dir", str(trial_dir.resolve()))
        print(f"random-nas trial-{trial.number:03d} ({done + 1}/{trials}): {genotype}", flush=True)
        # every trial starts from the same seed, so trials differ by their architecture only
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        given = cfg.trainer.get("callbacks")  # --trainer.callbacks: names, class paths, mappings or (Python) objects
        callbacks = list(given) if isinstance(given, (list, tuple)) else [] if given in (None, False) else [given]
        if not two:  # per-epoch val/acc to the trial (the pruner's input; Optuna prunes one objective only)
            from optuna_integration import PyTorchLightningPruningCallback

            callbacks.append(PyTorchLightningPruningCallback(trial, monitor=METRIC))
        # a trial is a run of the space's retrain recipe: its checkpoints load, test and export as one
        trial_cfg = dataclasses.replace(cfg, model=trial_recipe.name, resume=None, run_dir=None, trainer={**cfg.trainer, "callbacks": callbacks})
        started = time.time()
        try:
            result = fit_once(trial_recipe, trial_cfg, trial_dir, genotype=str(genotype))
        except optuna.TrialPruned as e:
            trial.set_user_attr("wall_time_s", round(time.time() - started, 2))
            print(f"random-nas trial-{trial.number:03d}: {e}", flush=True)
            raise
        except (RunInterrupted, KeyboardInterrupt):
            retry(study, trial)  # queued again: the next worker (or --resume) trains this architecture
            if embedded:
                how = f"resume it with: {resume_command(run_dir)}" if any(run_dir.rglob("*.ckpt")) else "no epoch had finished, so there is nothing to resume"
            else:
                how = "start the same command again to continue the study (the interrupted trial is queued again)"
            raise RunInterrupted(f"interrupted in trial {trial.number} of study {name!r} ({done} of {trials} trials done before it); {how}") from None
        except Exception as e:  # the trial's own failure (out of memory, ...): recorded, and the study goes on
            if disk_error(e) is not None:  # not the trial's: the disk is full; queued again, and this worker stops
                try:
                    retry(study, trial)
                except OSError:
                    pass  # the journal is on the full disk too: a worker that resumes fails the trial and queues it again
                raise
            trial.set_user_attr("error", f"{type(e).__name__}: {shorten(' '.join(str(e).split()), 300)}")
            trial.set_user_attr("wall_time_s", round(time.time() - started, 2))
            if launch_rank() == 0:
                atomic_write_bytes(trial_dir / "error.txt", traceback.format_exc().encode())
            free_accelerator_memory()
            print(f"random-nas trial-{trial.number:03d} failed ({trial.user_attrs['error']}); the study goes on", flush=True)
            raise TrialFailed(str(e)) from e
        fit_metrics, test_metrics = result.get("fit_metrics", {}), result.get("test_metrics", {})
        val_acc = fit_metrics.get(METRIC)
        if val_acc is None:
            trial.set_user_attr("error", f"no {METRIC} was logged")
            raise TrialFailed(f"no {METRIC} was logged")
        # after the last epoch (the learning rate has annealed to 0): the selection score
        for key, value in {
            "val_loss": fit_metrics.get("val/loss"), "test_acc": test_metrics.get("test/acc"), "params": result.get("params"),
            "wall_time_s": round(time.time() - started, 2), "fit_metrics": fit_metrics, "test_metrics": test_metrics,
            "best_checkpoint": result.get("best_checkpoint"),
            # two objectives report no per-epoch values, whose count is the epochs elsewhere
            **({"epochs": cfg.trainer.get("max_epochs")} if two else {}),
        }.items():
            trial.set_user_attr(key, value)
        if two and opts.get("objective") == "latency":
            # the trained architecture's latency, measured here as the latency tables are (CPU, eager
            # torch, batch 1, this run's threads, the median of 3 rounds); the weights do not matter for it
            from ..latency import time_in_rounds

            net = trial_recipe.module(**{**trial_cfg.model_args, "genotype": str(genotype)}).export_network()
            latency = time_in_rounds({"net": (net, tuple(trial_cfg.model_args["in_shape"]))})["net"]
            trial.set_user_attr("latency_ms", round(latency, 4))
            return val_acc, latency
        return (val_acc, result["params"]) if two else val_acc

    def after_trial(study, _trial) -> None:
        if launch_rank() == 0:
            write_tables(study, run_dir, run_dir)  # after every trial: a killed worker keeps what it did
        all_trials = study.get_trials(deepcopy=False)
        if budget_used(all_trials) >= trials and not any(t.state.name == "WAITING" for t in all_trials):
            study.stop()

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is printed here instead
    poll = 1.0 if lock_folder is not None else float(min(max(opts["heartbeat"], 1), 10))
    with WorkerLock(lock_folder) if lock_folder is not None else nullcontext() as lock:
        announced: set[int] = set()
        while True:
            # trials of dead workers are failed and queued again before the budget is counted
            fail_stale(study, lock_folder)
            all_trials = study.get_trials(deepcopy=False)
            if budget_used(all_trials) < trials or any(t.state.name == "WAITING" for t in all_trials):
                try:
                    study.optimize(objective, callbacks=[after_trial], catch=(TrialFailed, Surplus), gc_after_trial=True)
                except Exception as e:
                    disk = disk_error(e)
                    if disk is None:
                        raise
                    resumable = not embedded or any(run_dir.rglob("*.ckpt"))  # a run that trained nothing is removed (run.fit)
                    how = resume_command(run_dir) if embedded and resumable else "the same command again"
                    raise DlstratError(
                        f"cannot write {disk.filename or 'the study'}: {disk.strerror or disk} (the study stopped; its journal holds "
                        f"only whole records). Free some space, then continue the study with: {how} (the interrupted trial is trained again)"
                    ) from None
                continue
            # the budget is used: quit only once the trials other workers run are done, or train them
            # again if their worker dies (a killed worker's trial would otherwise stay RUNNING forever)
            waiting = awaited_trials(study, lock_folder)
            if not waiting:
                break
            numbers = sorted(t.number for t in waiting)
            if set(numbers) - announced:
                print(f"random-nas: all {trials} trials are taken; waiting for trial(s) {', '.join(map(str, numbers))} on other workers, "
                      "to train them again if their worker dies", flush=True)
                announced |= set(numbers)
            try:
                time.sleep(poll)
            except KeyboardInterrupt:
                raise RunInterrupted(
                    f"interrupted while waiting for trial(s) {', '.join(map(str, numbers))} of study {name!r} on other workers; "
                    "every trial this worker ran is recorded in the study"
                ) from None

    table = write_tables(study, run_dir, run_dir) if launch_rank() == 0 else []
    pictures = write_plots(study, run_dir) if launch_rank() == 0 else []
    best = winner(study)
    if best is None:
        failed = [t.user_attrs["error"] for t in study.trials if "error" in t.user_attrs]
        raise DlstratError(
            f"no trial of study {name!r} completed" + (f"; the first failure: {failed[0]} (all errors: trials.json)" if failed else "")
            + "; a pruner stops trials early only after some have finished, so this is not pruning"
        )
    genotype = genotype_of(best)
    running = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
    if launch_rank() == 0:
        genotype.save(run_dir / "genotype.json")
        space.plot(genotype, run_dir / "genotype.png", title=f"{opts['sampler']} search: best of {trials} (trial {best.number})")
    second = "measured latency" if opts.get("objective") == "latency" else "parameters"
    how = "validation accuracy" + (f" on the Pareto front of accuracy and {second}" if two else "")
    return {
        "trials": trials,
        "space": space.name,
        "study": info,
        "best_trial": best.number,
        "genotype": str(genotype),
        "val_acc": best.values[0],
        "fit_metrics": best.user_attrs.get("fit_metrics", {}),
        "test_metrics": best.user_attrs.get("test_metrics", {}),
        "best_checkpoint": best.user_attrs.get("best_checkpoint"),
        "params": best.user_attrs.get("params"),
        "report": [
            *format_table(table),
            f"best by {how}: trial {best.number} (study {name!r} in {where}; trials.json, trials.csv"
            + (", " + ", ".join(pictures) if pictures else "") + " in the run directory)",
            *([f"still running on other workers: trial(s) {', '.join(map(str, running))}"] if running else []),
            f"genotype: {genotype}",
            f"retrain it: {shell_command('dlstrat', 'fit', '--model', space.retrain_recipe, '--genotype', run_dir, '--data', cfg.data, '--seed', cfg.seed)}",
        ],
    }


def free_accelerator_memory() -> None:
    """After an out-of-memory trial, return the cached blocks so the next trial starts clean."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_name(cfg: RunConfig) -> str:
    """``random-nas-DATA`` in the DARTS space, ``random-nas-SPACE-DATA`` in another (``random-nas-nb201-digits``)."""
    space = cfg.options.get("space") or "darts"
    return f"random-nas-{cfg.data}" if space == "darts" else f"random-nas-{space}-{cfg.data}"


# --model.space=NAME trains (and checks its --model.KEY against) the module of the space's retrain
# recipe, with the presets of random-nas.yaml's `variants.NAME` table
RANDOM_NAS = Recipe(
    "random-nas", DARTS_NET.module, prepare=prepare, check=check, run=run, variant=space_of,
    variant_modules={name: TRIAL_RECIPES[cls.retrain_recipe].module for name, cls in SPACES.items()},
    resumable_without_checkpoint=is_study_dir, run_name=run_name,
)
