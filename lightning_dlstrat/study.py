"""Trial-based architecture search on Optuna: a search space as Optuna distributions, and the study around it.

The oldest NAS loop samples architectures, trains each and keeps the best; random search over the
DARTS space with early stopping is a strong baseline (Li & Talwalkar, "Random Search and
Reproducibility for Neural Architecture Search", UAI 2019). ``random-nas``
(:mod:`lightning_dlstrat.recipes.random_nas`) runs that loop as an Optuna study (Akiba et al.,
"Optuna: A Next-generation Hyperparameter Optimization Framework", KDD 2019), so it can be
resumed, pruned, and shared by many workers through one database. This module holds what faces
Optuna; the recipe trains the trials.

- **Search space** (:func:`suggest_genotype`): any :class:`~lightning_dlstrat.spaces.SearchSpace`,
  through its ``choices()``: categoricals with fixed options, which every sampler can model and
  whose uniform draw is the space's ``sample``. DARTS (per node ``normal.n2.inputs`` in ``"0,1"``,
  ..., and ``normal.n2.op0`` / ``op1``, ops other than ``none``) or NAS-Bench-201 (per edge
  ``cell/3<-1``, one of its 5 ops). A trial's space is read back from its parameter names.
- **Samplers** (:func:`make_sampler`): ``random`` (:class:`TrialSeededRandomSampler`: uniform, trial
  ``k``'s draws depend on ``(seed, k)`` only, so the sequence is the same however the study is
  split over workers or resumed), ``tpe`` (Bergstra et al., NeurIPS 2011) and ``nsga2`` (Deb et
  al., IEEE TEVC 2002; two objectives: validation accuracy up, parameters down).
- **Pruners** (:func:`make_pruner`): ``median`` and ``hyperband`` (Li et al., "Hyperband", JMLR
  2018), fed per-epoch ``val/acc`` by optuna-integration's ``PyTorchLightningPruningCallback``.
- **Storage** (:func:`open_storage`): a journal file (the default, ``RUN/study.journal``; or any
  path: workers on one host) or a database URL (``postgresql://``, ``mysql://``, ``sqlite:///``:
  workers on many machines), opened by :func:`open_study`, which refuses to mix trials made with
  different settings.
- **Killed workers**: a trial whose worker died stays RUNNING in Optuna. Databases detect it by
  Optuna's heartbeat; journal files by a lock each worker holds for its lifetime
  (:class:`WorkerLock`, :func:`fail_dead_workers`). Either way the trial is marked failed and
  queued again with the same architecture (:func:`requeue`, as Optuna's ``RetryHeartbeatStaleTrialCallback``).
- **The budget** (:func:`counted`, :func:`budget_used`): ``--trials N`` is N trials in the whole
  study, over all workers. A trial counts once it is running, waiting, or reached a verdict
  (complete, pruned, or failed by its own error); trials abandoned by a dead or interrupted worker
  do not (their retry does), and neither do the rare surplus trials a worker opens when others
  filled the budget at the same moment (told failed at once, never trained).
- **Outputs** (:func:`write_tables`, :func:`write_plots`): ``trials.json`` / ``trials.csv``, Optuna's
  matplotlib plots as PNG, and for ``nsga2`` the Pareto front as ``pareto_front.csv`` / ``.png``.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import random
import socket
import time
import uuid
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file
from optuna.trial import FrozenTrial, TrialState

from .core import DlstratError, atomic_write_bytes, atomic_write_json, shorten
from .spaces import SPACES, DartsSpace, SearchSpace, get_space

SAMPLERS = ("random", "tpe", "nsga2")
PRUNERS = ("none", "median", "hyperband")
STUDY_FILE = "study.journal"  # the embedded study of a run directory
STUDY_INFO = "study.json"  # in the run directory of a study: which study its trials belong to (and where it is)
MAX_RETRIES = 2  # a trial whose worker keeps dying (the kernel's OOM killer) is given up after this
METRIC = "val/acc"  # what trials report per epoch and are selected by (validation data only)

# --- the search space -----------------------------------------------------------------------------
def suggest_genotype(trial: optuna.Trial, space: SearchSpace | None = None) -> Any:
    """A genotype of ``space`` (default: DARTS) drawn through ``trial``'s sampler, one categorical
    per decision of ``space.choices()`` (DARTS: per cell and node ``normal.n2.inputs``, ``.op0``,
    ``.op1``; NAS-Bench-201: per edge ``cell/3<-1``)."""
    space = space or DartsSpace()
    return space.from_choices({name: trial.suggest_categorical(name, options) for name, options in space.choices().items()})


def distributions(space: SearchSpace | None = None) -> dict[str, CategoricalDistribution]:
    """The parameters :func:`suggest_genotype` draws and their choices (for ``optuna.create_trial``)."""
    return {name: CategoricalDistribution(options) for name, options in (space or DartsSpace()).choices().items()}


def genotype_params(genotype: Any, space: SearchSpace | None = None) -> dict[str, str]:
    """The inverse of :func:`suggest_genotype`: the trial parameters that draw ``genotype`` (for ``enqueue_trial``)."""
    return (space or DartsSpace()).to_choices(genotype)


def space_of_params(params: dict[str, Any]) -> SearchSpace | None:
    """The space whose decisions are exactly ``params``' names (None: a trial that has not drawn yet)."""
    return next((space for space in map(get_space, SPACES) if set(params) == set(space.choices())), None)


def genotype_from_dict(d: dict[str, Any]) -> Any:
    """A ``trials.json`` genotype (its ``to_dict`` form) back as the genotype of its space."""
    for space in map(get_space, SPACES):
        try:
            return space.from_dict(d)
        except (ValueError, TypeError, KeyError):
            continue
    raise ValueError(f"{shorten(d, 80)} is the genotype of no known search space ({', '.join(SPACES)})")


def genotype_of(trial: FrozenTrial) -> Any:
    """The genotype a trial trained, in the space its parameters belong to (None before it drew one)."""
    space = space_of_params(trial.params)
    return space.from_choices(trial.params) if space is not None else None


# --- samplers and pruners --------------------------------------------------------------------------
class TrialSeededRandomSampler(optuna.samplers.RandomSampler):
    """Optuna's uniform sampler, with trial ``k``'s draws a function of ``(seed, k, parameter)`` only.

    A plain ``RandomSampler(seed)`` draws from one stream per process, so two workers with the same
    seed would train the same architectures and a resumed study would repeat its first ones
    (storages keep no sampler state). Trial numbers are unique in a study, so keying the draws by
    them gives every trial its own architecture and the same sequence however the trials are split.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.seed = seed

    def reseed_rng(self) -> None:  # the draws depend on the trial number, not on the process
        pass

    def sample_independent(self, study, trial, param_name, param_distribution):
        key = zlib.crc32(f"{self.seed}:{trial.number}:{param_name}".encode())
        return optuna.samplers.RandomSampler(seed=key).sample_independent(study, trial, param_name, param_distribution)


def make_sampler(name: str, seed: int, trials: int, joining: bool = False) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` seeded by ``seed``.

    TPE and NSGA-II keep their state in the process, so a worker that joins a study with trials in it
    (a resumed run, a second machine) is reseeded from the seed, the study's size and the process,
    not to repeat the first worker's startup draws. Their startup phases are scaled to the budget:
    TPE's 10 random trials and NSGA-II's population of 50 would leave an 8-trial study random.
    """
    if joining and name != "random":
        seed = zlib.crc32(f"{seed}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}".encode())
    if name == "random":
        return TrialSeededRandomSampler(seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 2)), constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=min(50, max(2, trials // 2)))
    raise DlstratError(f"--model.sampler must be one of {', '.join(SAMPLERS)}, not {shorten(name, 60)!r}")


def make_pruner(name: str, max_epochs: int | None) -> optuna.pruners.BasePruner:
    """``none``, ``median`` (stop a trial below the median of earlier trials at the same epoch, after
    3 finished trials and from the second epoch on) or ``hyperband`` (min 1 epoch, max ``max_epochs``, factor 3)."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs or "auto", reduction_factor=3)
    raise DlstratError(f"--model.pruner must be one of {', '.join(PRUNERS)}, not {shorten(name, 60)!r}")


def directions(sampler: str) -> list[str]:
    return ["maximize", "minimize"] if sampler == "nsga2" else ["maximize"]


OBJECTIVES = ("params", "latency")  # nsga2's second objective, minimised: parameters, or latency measured on this machine (ms)


def check_options(options: dict[str, Any]) -> None:
    """The study's settings (random-nas options), refused with one clear message before any run directory exists."""
    trials = options.get("trials")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise DlstratError(f"--trials must be a positive integer, not {shorten(trials, 60)}")
    if options.get("sampler") not in SAMPLERS:
        raise DlstratError(f"--model.sampler must be one of {', '.join(SAMPLERS)}, not {shorten(options.get('sampler'), 60)!r}")
    if options.get("pruner") not in PRUNERS:
        raise DlstratError(f"--model.pruner must be one of {', '.join(PRUNERS)}, not {shorten(options.get('pruner'), 60)!r}")
    if options.get("objective", "params") not in OBJECTIVES:
        raise DlstratError(f"--model.objective must be one of {', '.join(OBJECTIVES)} (nsga2's second objective), not {shorten(options.get('objective'), 60)!r}")
    if options.get("objective", "params") != "params" and options["sampler"] != "nsga2":
        raise DlstratError(f"--model.objective={options['objective']} is the second objective of --model.sampler=nsga2; add it, or drop --model.objective")
    if options["sampler"] == "nsga2" and options["pruner"] != "none":
        raise DlstratError("--model.pruner works with one objective only (Optuna cannot prune multi-objective trials); drop it for --model.sampler=nsga2")
    for key in ("storage", "study"):
        value = options.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise DlstratError(f"--model.{key} must be a non-empty text, not {shorten(value, 60)}")
    beat = options.get("heartbeat")
    if isinstance(beat, bool) or not isinstance(beat, int) or beat < 1:
        raise DlstratError(f"--model.heartbeat must be a positive number of seconds, not {shorten(beat, 60)}")


# --- the journal file ---------------------------------------------------------------------------------
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # the disk, not the trial: the worker stops, the trial is queued again


class JournalDamaged(DlstratError):
    """A journal file with a record that is neither a whole record nor a torn one (garbage, a binary file)."""


class SafeJournalFileBackend(JournalFileBackend):
    """Optuna's journal file, written so that a full disk cannot tear it and read so that a torn record cannot ruin it.

    A record is appended with ``os.write`` under the journal's lock and ``fsync``ed; when writing
    fails (no space left, a quota), the file is cut back to its length before the write, so it
    never holds half a record, and the error names the file. A torn record already there (a worker
    killed mid-write, or written by an older version, which left the half record and appended the
    next one to it) is dropped when the journal is read: the last line without its newline is
    skipped (Optuna's own rule: a write in progress) and cut before the next append, under the
    lock; a line whose head is torn but whose tail is a whole record is read as that record.
    Anything else that is not a journal record stops with :class:`JournalDamaged`.
    """

    RECORD = b'{"op_code":'  # how every record Optuna writes begins

    def read_logs(self, log_number_from: int):
        with open(self._file_path, "rb") as f:
            remaining = os.fstat(f.fileno()).st_size  # what another worker appends meanwhile is read next time
            start = 0
            if log_number_from in self._log_number_offset:
                f.seek(self._log_number_offset[log_number_from])
                start = log_number_from
                remaining -= self._log_number_offset[log_number_from]
            for number, line in enumerate(f, start=start):
                remaining -= len(line)
                if remaining < 0 or not line.endswith(b"\n"):
                    break  # the last line, being written, or torn: not a record (yet)
                if number + 1 not in self._log_number_offset:
                    self._log_number_offset[number + 1] = self._log_number_offset[number] + len(line)
                if number < log_number_from:
                    continue
                yield self._record(line, number)

    def _record(self, line: bytes, number: int) -> dict[str, Any]:
        last = line.rfind(self.RECORD)
        for begin in (0, last) if last > 0 else (0,):  # the whole line; else its tail after a torn head
            try:
                record = json.loads(line[begin:])
            except ValueError:  # JSONDecodeError, UnicodeDecodeError
                continue
            if isinstance(record, dict) and isinstance(record.get("op_code"), int):
                return record
        raise JournalDamaged(
            f"{self._file_path} is not an Optuna journal, or is damaged: line {number + 1} is not a journal record "
            f"({shorten(line[:80].decode('utf-8', 'replace'), 60)}); a journal holds one JSON record a line"
        )

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        with get_lock_file(self._lock):
            fd = os.open(self._file_path, os.O_RDWR | os.O_APPEND)
            try:
                size = self._cut_torn_tail(fd)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError as e:
                    try:  # never half a record: the journal as it was before this write
                        os.ftruncate(fd, size)
                        os.fsync(fd)
                    except OSError:
                        pass
                    raise OSError(e.errno, e.strerror, self._file_path) from None
            finally:
                os.close(fd)

    @staticmethod
    def _cut_torn_tail(fd: int) -> int:
        """The file's length once a torn last record (no newline) is cut; only its writer could finish it, and it died."""
        size = os.fstat(fd).st_size
        end = size
        while end > 0:
            chunk = os.pread(fd, min(end, 1 << 16), end - min(end, 1 << 16))
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                end = end - len(chunk) + newline + 1
                break
            end -= len(chunk)
        if end != size:
            os.ftruncate(fd, end)
        return end


def disk_error(e: BaseException) -> OSError | None:
    """The full or read-only disk behind ``e``, if any (Optuna reports a failed write as AssertionError("Should not reach."))."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return e
        e = e.__cause__ or e.__context__
    return None


# --- storages and studies --------------------------------------------------------------------------
def is_url(spec: str) -> bool:
    return "://" in spec


def masked(spec: str) -> str:
    """A storage for messages and files: a URL's password replaced by ***."""
    if not is_url(spec):
        return spec
    from sqlalchemy.engine import make_url

    try:
        return make_url(spec).render_as_string(hide_password=True)
    except Exception:
        return spec.split("://")[0] + "://..."


def open_storage(spec: str | Path, heartbeat: int | None = 60) -> optuna.storages.BaseStorage:
    """A journal file (a path) or a database (a URL: ``postgresql://``, ``mysql+pymysql://``, ``sqlite:///``).

    Databases get Optuna's heartbeat: a running trial whose worker has been silent for twice
    ``heartbeat`` seconds is marked failed and retried when a worker starts its next trial.
    """
    spec = str(spec)
    if not is_url(spec):
        path = Path(spec)
        if path.is_dir():
            raise DlstratError(f"--model.storage {spec} is a folder; give a journal file (e.g. {path / 'study.journal'}) or a database URL")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(SafeJournalFileBackend(str(path)))
        except OSError as e:
            raise DlstratError(f"cannot open the journal file {spec}: {e.strerror or e}") from None
        except DlstratError:
            raise
        except Exception as e:  # whole JSON records that Optuna cannot replay
            raise JournalDamaged(f"{spec} is not an Optuna journal, or is damaged: replaying it failed ({type(e).__name__}: {shorten(str(e), 200)})") from None
    spec = with_driver(spec)
    engine_kwargs = {"connect_args": {"timeout": 60}} if spec.startswith("sqlite") else None  # wait for a writer instead of "database is locked"
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat: experimental since 2.9
                    return RDBStorage(
                        spec, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                        heartbeat_stale_trial_callback=requeue if heartbeat else None,
                    )
            except (IntegrityError, ProgrammingError):
                # workers started together on a new database race to create Optuna's tables; the
                # loser finds them made ("duplicate key ... already exists") and opens them next time
                if attempt == 4:
                    raise
                time.sleep(0.5 + random.random())
    except ModuleNotFoundError as e:
        raise DlstratError(f"--model.storage {masked(spec)} needs the database driver {e.name}; install it (PostgreSQL: pip install 'lightning-dlstrat[postgres]', i.e. psycopg; MySQL: pip install pymysql and write mysql+pymysql://)") from None
    except Exception as e:  # sqlalchemy's ArgumentError (a bad URL), OperationalError (no server, wrong password)
        why = " ".join(str(getattr(e, "orig", None) or e).split())
        raise DlstratError(f"cannot open the study storage {masked(spec)}: {shorten(why, 300)}") from None


def with_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed: SQLAlchemy's default is psycopg2
    up to 2.0 and psycopg (3) from 2.1, so a plain URL would otherwise work with one of them only."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://" + url.removeprefix("postgresql://")
    return url


def fingerprint(cfg) -> dict[str, Any]:
    """The settings every trial of one study must share (what makes their accuracies comparable).

    Where a trial runs (accelerator, devices, progress bar) may differ between workers.
    """
    local = {"accelerator", "devices", "strategy", "num_nodes", "enable_progress_bar", "logger", "callbacks", "enable_model_summary"}
    return json.loads(json.dumps({
        "recipe": cfg.model, "data": cfg.data, "data_args": {k: v for k, v in cfg.data_args.items() if k not in ("data_dir", "num_workers")},
        "model_args": {k: v for k, v in cfg.model_args.items() if k != "genotype"},
        "trainer": {k: v for k, v in cfg.trainer.items() if k not in local}, "seed": cfg.seed,
        "sampler": cfg.options["sampler"], "pruner": cfg.options["pruner"],
    }, default=str))


def open_study(storage, name: str, sampler_name: str, seed: int, trials: int, pruner, settings: dict[str, Any] | None) -> tuple[optuna.Study, bool]:
    """``(study, created)``: create study ``name`` or join it; a study made with other settings is refused.

    Creation is atomic in the storage, so workers started at the same moment agree on one study;
    the one that created it samples from ``seed`` itself, the others are reseeded (:func:`make_sampler`).
    """
    wanted = directions(sampler_name)
    try:
        sampler = make_sampler(sampler_name, seed, trials)
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner, directions=wanted)
        if settings is not None:
            study.set_user_attr("dlstrat", settings)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(sampler_name, seed, trials, joining=True), pruner=pruner)
    have = [d.name.lower() for d in study.directions]
    if have != wanted:
        raise DlstratError(f"study {name!r} optimises {' and '.join(have)} objectives, but --model.sampler={sampler_name} needs {' and '.join(wanted)}; use its sampler or a new --model.study")
    theirs = study.user_attrs.get("dlstrat")
    if settings is not None and theirs is not None and theirs != settings:
        diff = first_difference(theirs, settings)
        raise DlstratError(
            f"study {name!r} holds trials made with other settings ({diff}); its trials would not be comparable. "
            "Run the same settings as its other workers, or start a new study (--model.study=NAME)"
        )
    return study, False


def first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
    return f"{where}: the study has {shorten(a, 60)}, this command {shorten(b, 60)}"


# --- killed workers ----------------------------------------------------------------------------------
class WorkerLock:
    """A lock a worker holds on ``folder/NAME.lock`` for its lifetime; the kernel drops it when the process dies, even by SIGKILL.

    Journal storages have no heartbeat, so a trial whose worker was killed stays RUNNING; the lock
    (``fcntl.flock``, valid across processes of one host) tells the others that it is dead.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._file = None

    def __enter__(self) -> WorkerLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = open(self.folder / f"{self.name}.lock", "w")
        fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        path = self.folder / f"{self.name}.lock"
        path.unlink(missing_ok=True)
        self._file.close()

    @staticmethod
    def alive(folder: Path, name: str) -> bool:
        path = folder / f"{name}.lock"
        try:
            with open(path, "r+") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(f, fcntl.LOCK_UN)
        except FileNotFoundError:
            return False
        path.unlink(missing_ok=True)
        return False


def fail_dead_workers(study: optuna.Study, lock_folder: Path) -> list[int]:
    """Mark failed the running trials of this host's dead workers, and queue each again once (journal storages).

    The storage lets exactly one worker finish a trial, so two workers that find the same dead one
    queue one retry between them. Returns the numbers of the trials failed here.
    """
    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        lock = trial.user_attrs.get("lock")
        if not lock or trial.user_attrs.get("host") != host or WorkerLock.alive(lock_folder, lock):
            continue
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(trial.number)
        requeue(study, study._storage.get_trial(trial._trial_id))
    return failed


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue an abandoned trial's architecture again as a WAITING trial, at most ``MAX_RETRIES`` times.

    As Optuna's ``RetryHeartbeatStaleTrialCallback`` (the same ``failed_trial`` / ``retry_history``
    system attributes), but without the dead worker's user attributes: its lock must not make the
    retry look abandoned too.
    """
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRIES:
        return
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs={"failed_trial": trial.system_attrs.get("failed_trial", trial.number), "retry_history": history},
    ))


def retry(study: optuna.Study, trial: optuna.Trial) -> None:
    """Queue an interrupted trial's architecture again (it is told failed right after)."""
    requeue(study, study._storage.get_trial(trial._trial_id))


def fail_stale(study: optuna.Study, lock_folder: Path | None) -> None:
    """Both mechanisms: Optuna's heartbeat for databases, the worker locks for journal files."""
    if isinstance(study._storage, JournalStorage):
        if lock_folder is not None:
            fail_dead_workers(study, lock_folder)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def awaited_trials(study: optuna.Study, lock_folder: Path | None) -> list[FrozenTrial]:
    """Running trials of other workers whose death this worker would notice, so it waits for them before it quits.

    A worker that quits once the budget is used leaves a trial running elsewhere to its worker; if
    that worker is then killed, nobody trains the trial again. So a worker waits for the trials it
    can watch: every one in a database (Optuna's heartbeat), and in a journal file those of this
    host (their worker's lock; a journal shared between hosts cannot tell whether another host's
    worker is alive). A trial whose worker has not yet written down its host and lock (the first
    milliseconds of a trial) is waited for a minute at most.
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not isinstance(study._storage, JournalStorage):
        return running
    if lock_folder is None:
        return []
    host, now = socket.gethostname(), time.time()
    return [
        t for t in running
        if (t.user_attrs.get("host") == host and t.user_attrs.get("lock"))
        or ("host" not in t.user_attrs and t.datetime_start is not None and now - t.datetime_start.timestamp() < 60)
    ]


# --- the budget -------------------------------------------------------------------------------------
def counted(trial: FrozenTrial) -> bool:
    """Whether a trial uses one of the ``--trials`` (see the module docstring)."""
    if trial.state == TrialState.FAIL:
        return "error" in trial.user_attrs
    return True


def budget_used(trials: Iterable[FrozenTrial], before: int | None = None) -> int:
    """Counted trials (numbered below ``before``, if given)."""
    return sum(1 for t in trials if counted(t) and (before is None or t.number < before))


# --- tables and pictures ----------------------------------------------------------------------------
def note(trial: FrozenTrial, retried: dict[int, int]) -> str:
    attrs = trial.user_attrs
    parts = []
    if "failed_trial" in trial.system_attrs:
        parts.append(f"retry of trial {trial.system_attrs['failed_trial']}")
    if trial.state == TrialState.PRUNED and trial.last_step is not None:
        parts.append(f"pruned after epoch {trial.last_step + 1}")
    if trial.state == TrialState.FAIL:
        if "error" in attrs:
            parts.append(f"failed: {attrs['error']}")
        elif trial.number in retried:
            parts.append(f"abandoned (its worker died or was interrupted); retried as trial {retried[trial.number]}")
        else:
            parts.append("abandoned (its worker died or was interrupted)")
    if trial.state == TrialState.RUNNING:
        parts.append(f"running on {attrs.get('worker', '?')}")
    return "; ".join(parts)


def rows(study: optuna.Study, run_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per trial (surplus trials, never trained, left out), in trial order."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}
    out = []
    for t in trials:
        if t.user_attrs.get("surplus"):
            continue
        genotype = genotype_of(t)
        where = t.user_attrs.get("dir")
        if where and run_dir is not None:
            try:
                where = str(Path(where).relative_to(Path(run_dir).resolve()))
            except ValueError:
                pass
        values = t.values or []
        val_acc = values[0] if values else (t.intermediate_values[t.last_step] if t.last_step is not None and t.state == TrialState.PRUNED else None)
        out.append({
            "trial": t.number,
            "state": t.state.name.lower(),
            "val_acc": val_acc,
            "val_loss": t.user_attrs.get("val_loss"),
            "test_acc": t.user_attrs.get("test_acc"),
            "params": t.user_attrs.get("params"),
            "latency_ms": t.user_attrs.get("latency_ms"),
            "epochs": (t.last_step + 1) if t.last_step is not None else t.user_attrs.get("epochs"),
            "wall_time_s": t.user_attrs.get("wall_time_s"),
            "worker": t.user_attrs.get("worker"),
            "dir": where,
            "note": note(t, retried),
            "genotype": genotype.to_dict() if genotype else None,
        })
    return out


def winner(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial by validation accuracy (ties: lower validation loss, then the earlier trial).

    For two objectives this is the most accurate trial of the Pareto front (ties: the smaller second objective).
    """
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        return None
    if len(study.directions) > 1:
        front = study.best_trials
        return min(front, key=lambda t: (-t.values[0], t.values[1], t.number))
    return min(complete, key=lambda t: (-t.values[0], t.user_attrs.get("val_loss", float("inf")), t.number))


COLUMNS = ("trial", "state", "val_acc", "val_loss", "test_acc", "params", "latency_ms", "epochs", "wall_time_s", "worker", "dir", "note", "genotype")


def write_tables(study: optuna.Study, out: Path, run_dir: Path | None = None) -> list[dict[str, Any]]:
    """``trials.json`` and ``trials.csv`` (the genotype as its text), and ``pareto_front.csv`` for two objectives."""
    table = rows(study, run_dir)
    atomic_write_json(out / "trials.json", table)
    atomic_write_bytes(out / "trials.csv", to_csv(table))
    if len(study.directions) > 1:
        front = {t.number for t in study.best_trials}
        atomic_write_bytes(out / "pareto_front.csv", to_csv([r for r in table if r["trial"] in front]))
    return table


def to_csv(table: Sequence[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for r in table:
        writer.writerow({**r, "genotype": str(genotype_from_dict(r["genotype"])) if r["genotype"] else ""})
    return buf.getvalue().encode()


def format_table(table: Sequence[dict[str, Any]]) -> list[str]:
    """The table as text lines, for the terminal."""
    def num(v, f):
        return "-" if v is None else format(v, f)

    lines = [f"{'trial':>5}  {'state':8}  {'val/acc':>7}  {'val/loss':>8}  {'test/acc':>8}  {'params':>8}  {'epochs':>6}  {'time':>7}  note"]
    for r in table:
        lines.append(
            f"{r['trial']:>5}  {r['state']:8}  {num(r['val_acc'], '.4f'):>7}  {num(r['val_loss'], '.4f'):>8}  {num(r['test_acc'], '.4f'):>8}  "
            f"{num(r['params'], ','):>8}  {num(r['epochs'], 'd'):>6}  {num(r['wall_time_s'], '.1f') + ('s' if r['wall_time_s'] is not None else ''):>7}  {r['note']}"
        )
    return lines


def write_plots(study: optuna.Study, out: Path) -> list[str]:
    """Optuna's matplotlib plots as PNG; returns the files written (none before the first complete trial)."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; a backend already chosen is kept
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    two = len(study.directions) > 1
    acc = {"target": (lambda t: t.values[0]), "target_name": METRIC} if two else {"target_name": METRIC}
    plots = {
        "optimization_history.png": lambda: ovm.plot_optimization_history(study, **acc),
        "parallel_coordinate.png": lambda: ovm.plot_parallel_coordinate(study, **acc),
    }
    if two:
        second = "latency_ms" if any("latency_ms" in t.user_attrs for t in study.get_trials(deepcopy=False)) else "params"
        plots["pareto_front.png"] = lambda: ovm.plot_pareto_front(study, target_names=[METRIC, second])
    elif any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots["intermediate_values.png"] = lambda: ovm.plot_intermediate_values(study)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message=".*identical low and high ylims.*")  # a parameter every trial drew alike
        for name, draw in plots.items():
            ax = draw()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            if name == "parallel_coordinate.png":  # one axis per parameter (24): room for their labels
                fig.set_size_inches(1.1 * (len(study.trials[0].params) + 1), 6)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            plt.close(fig)
            atomic_write_bytes(out / name, buf.getvalue())
            written.append(name)
    return written


# --- `dlstrat study show` -----------------------------------------------------------------------------
def show(run_dir: Path | None, storage: str | None, name: str | None, out: Path | None) -> tuple[list[dict[str, Any]], list[str], Path]:
    """Load a study from a run directory (its ``study.json`` and ``config.yaml``) or from ``storage`` and ``name``;
    write its tables and plots into ``out``. Returns ``(table, files written, folder)``."""
    from .config import read_config_file

    if (run_dir is None) == (storage is None):
        raise DlstratError("give a random-nas run directory, or --storage URL|FILE with --study NAME (not both)")
    if run_dir is not None:
        info_path = Path(run_dir) / STUDY_INFO
        if not info_path.is_file():
            raise DlstratError(f"{run_dir} is not the run directory of a study (no study.json); pass the folder `dlstrat fit --model random-nas` printed")
        try:
            info = json.loads(info_path.read_text())
            name = info["study"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise DlstratError(f"{info_path} is not a study description ({type(e).__name__}: {shorten(str(e), 100)})") from None
        options = (read_config_file(Path(run_dir) / "config.yaml").get("options") or {}) if (Path(run_dir) / "config.yaml").is_file() else {}
        # the storage as given (a URL with its password, if it had one; study.json keeps it masked)
        spec = str(Path(run_dir) / STUDY_FILE) if options.get("storage") is None else str(options["storage"])
        folder = Path(out) if out is not None else Path(run_dir)
    else:
        if not name:
            raise DlstratError("--storage needs --study NAME: the --model.study its workers were started with")
        spec, folder = storage, Path(out) if out is not None else Path(name)
    if not is_url(spec) and not Path(spec).is_file():
        raise DlstratError(f"the study file {spec} does not exist")
    opened = open_storage(spec, heartbeat=None)
    try:
        study = optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        known = optuna.get_all_study_names(storage=opened)
        raise DlstratError(f"no study {shorten(name, 80)!r} in {masked(spec)}; it holds: {', '.join(known) or 'no studies'}") from None
    folder.mkdir(parents=True, exist_ok=True)
    table = write_tables(study, folder, run_dir)
    written = ["trials.json", "trials.csv"] + (["pareto_front.csv"] if len(study.directions) > 1 else []) + write_plots(study, folder)
    return table, written, folder
