"""Loggers and callbacks named in settings: ``--trainer.logger`` and ``--trainer.callbacks``.

They take what LightningCLI takes, in a flag or in the ``trainer:`` section of ``--config``::

    --trainer.logger=tensorboard                   # a name: csv, tensorboard, wandb, mlflow
    --trainer.logger=[tensorboard,mlflow]          # several
    --trainer.logger=false                         # none at all (no metrics.csv either)
    --trainer.logger='{class_path: lightning.pytorch.loggers.TensorBoardLogger, init_args: {log_graph: true}}'
    --trainer.callbacks='[{class_path: lightning.pytorch.callbacks.EarlyStopping, init_args: {monitor: val/loss, patience: 3}}]'
    --trainer.callbacks=[LearningRateMonitor]      # short names of lightning.pytorch.callbacks classes

The run directory's ``metrics.csv`` (:class:`lightning_dlstrat.run.RunLogger`, which continues the
file on resume) is always the first logger while any logger is on: nothing in a run depends on
which other loggers log, and ``trainer.log_dir`` stays the run directory. The other loggers write
into the run directory too (``RUN/tensorboard/``, ``RUN/mlruns/``, ``RUN/wandb/``; see
:func:`lightning_dlstrat.run.build_loggers`), and need their package, an optional extra of this one
(``pip install "lightning-dlstrat[tensorboard]"``). A class must be a Lightning ``Logger`` or
``Callback``: a class of the standalone ``pytorch_lightning`` package is refused, since Lightning
would not recognise it.

Importing a module runs it, so a class path is checked before anything is imported. Lightning's own
callbacks and loggers (``lightning.pytorch.callbacks``, ``lightning.pytorch.loggers`` and their
short names) may come from anywhere. A class of any other module only from the command line (a
``--trainer.callbacks`` / ``--trainer.logger`` flag, or the Python API's arguments), never from a
``--config`` file or a run's replayed ``config.yaml``, which may have been downloaded; and even
there not from Python's standard library (``this``, ``unittest.__main__``) unless already imported.

The checkpoints are the run's: the ``ModelCheckpoint`` that writes ``checkpoints/best.ckpt`` and
``last.ckpt`` is built by the run layer. A ``ModelCheckpoint`` entry in ``--trainer.callbacks``
changes that one's settings (``monitor``, ``mode``, ``save_top_k``, ``every_n_epochs``, ...)
instead of adding a second writer into the same folder; its folder, ``last.ckpt`` and file
versions stay the run's.

Everything is checked while the configuration is resolved, before a run directory exists.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from .core import DlstratError, shorten

# names of --trainer.logger -> the Lightning class (and the extra of this package it needs)
LOGGER_NAMES = {
    "csv": "lightning.pytorch.loggers.CSVLogger",
    "tensorboard": "lightning.pytorch.loggers.TensorBoardLogger",
    "wandb": "lightning.pytorch.loggers.WandbLogger",
    "mlflow": "lightning.pytorch.loggers.MLFlowLogger",
}
# logger class name -> (extra of lightning-dlstrat, modules of which one must import); subclasses count
EXTRAS = {
    "TensorBoardLogger": ("tensorboard", ("tensorboard", "tensorboardX")),
    "WandbLogger": ("wandb", ("wandb",)),
    "MLFlowLogger": ("mlflow", ("mlflow",)),
}
# settings of the run's own ModelCheckpoint that a --trainer.callbacks entry may not change
OWNED_CHECKPOINT_ARGS = ("dirpath", "save_last", "enable_version_counter")
# the CSV log is the run directory's metrics.csv
OWNED_CSV_ARGS = ("save_dir", "name", "version")
MAX_ENTRIES = 32  # loggers or callbacks in one setting

_CLASS_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# Lightning's callbacks and loggers: class paths from any settings may import these (and their submodules)
ALLOWED_MODULES = ("lightning.pytorch.callbacks", "lightning.pytorch.loggers")
# modules of class paths given on the command line (or to the Python API) in this process: the user's own
_COMMAND_LINE_MODULES: set[str] = set()


def trust_command_line(*values: Any) -> None:
    """The modules the ``--trainer.callbacks`` / ``--trainer.logger`` flags name: the user chose them, so they may be
    imported. :func:`config.resolve` calls this with the flags' values (never a file's) for each run it resolves;
    what an earlier run's flags named is forgotten."""
    _COMMAND_LINE_MODULES.clear()
    for value in values:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            path = item.get("class_path") if isinstance(item, dict) else item
            if isinstance(path, str) and _CLASS_PATH.match(path) and "." in path:
                _COMMAND_LINE_MODULES.add(path.rpartition(".")[0])


def check_importable(module_name: str, path: str, base: type, short_module: str, flag: str) -> None:
    """Refuse, before anything is imported, a module that is neither Lightning's nor the user's own from the command line."""
    import sys

    if any(module_name == m or module_name.startswith(m + ".") for m in ALLOWED_MODULES):
        return
    kinds = "callbacks" if base.__name__ == "Callback" else "loggers"
    if module_name not in _COMMAND_LINE_MODULES:
        raise DlstratError(
            f"{flag}: {shorten(path, 100)} is not one of Lightning's {kinds} ({short_module}); a class of another module is "
            f"imported only when you name it on the command line ({flag}={shorten(path, 100)}), never from a configuration "
            "file or a replayed run, which could import any module"
        )
    if module_name in sys.modules:  # imported already: looking into it runs nothing
        return
    parts = module_name.split(".")
    if parts[0] in sys.stdlib_module_names or "__main__" in parts:
        raise DlstratError(
            f"{flag}: {shorten(path, 100)} names a module of Python's standard library ({parts[0]}), which holds no Lightning "
            f"{kinds}; importing it would only run it. Give one of Lightning's {kinds} or a class of your own package"
        )


@dataclass(frozen=True)
class Spec:
    """One logger or callback to build: its class, its ``init_args``, and the short name it goes by."""

    cls: type
    init_args: dict[str, Any] = field(default_factory=dict)
    name: str = ""  # "csv", "tensorboard", ... for the named loggers; else the class name

    def is_a(self, class_name: str) -> bool:
        """The class is (a subclass of) the Lightning class of this name."""
        return any(k.__name__ == class_name and k.__module__.startswith("lightning.") for k in self.cls.__mro__)


# --- importing a class path -------------------------------------------------------------------------
def import_class(path: Any, base: type, short_module: str, flag: str) -> type:
    """The class ``path`` names (``pkg.mod.Class``, or a short name from ``short_module``), a subclass of ``base``."""
    if not isinstance(path, str) or not _CLASS_PATH.match(path):
        raise DlstratError(f"{flag}: {shorten(path, 100)} is not a class path (like {short_module}.{base.__name__} or a short name)")
    module_name, _, class_name = path.rpartition(".")
    module_name = module_name or short_module
    check_importable(module_name, path, base, short_module, flag)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise DlstratError(f"{flag}: cannot import {module_name} for {path} ({type(e).__name__}: {shorten(str(e), 200)}); check the class path, or install the package it comes from") from None
    except Exception as e:  # a module that fails while it is imported
        raise DlstratError(f"{flag}: importing {module_name} for {path} failed ({type(e).__name__}: {shorten(str(e), 200)})") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        known = [n for n in dir(module) if isinstance(getattr(module, n, None), type) and issubclass(getattr(module, n), base)]
        close = difflib.get_close_matches(class_name, known, n=3)
        raise DlstratError(f"{flag}: {module_name} has no class {class_name}" + (f"; did you mean: {', '.join(close)}?" if close else ""))
    if not isinstance(cls, type) or not issubclass(cls, base):
        standalone = isinstance(cls, type) and any(k.__module__.startswith("pytorch_lightning") for k in cls.__mro__)
        why = (
            f"; it comes from the standalone pytorch_lightning package, which Lightning does not recognise: use "
            f"{path.replace('pytorch_lightning', 'lightning.pytorch', 1)}" if standalone else ""
        )
        raise DlstratError(f"{flag}: {path} is not a Lightning {base.__name__} (a subclass of {short_module}.{base.__name__}){why}")
    return cls


def _entries(value: Any, flag: str) -> list[Any]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(items) > MAX_ENTRIES:
        raise DlstratError(f"{flag}: {len(items)} entries is more than the {MAX_ENTRIES} allowed")
    return items


def _spec(item: Any, base: type, short_module: str, flag: str, names: dict[str, str] | None = None) -> Spec:
    """A name, a class path or a ``{class_path, init_args}`` mapping as a :class:`Spec`."""
    init_args: Any = {}
    if isinstance(item, dict):
        unknown = set(item) - {"class_path", "init_args"}
        if unknown or "class_path" not in item:
            raise DlstratError(f"{flag}: a mapping entry needs a class_path and may have init_args, nothing else (got {shorten(sorted(map(str, item)), 100)})")
        path, init_args = item["class_path"], item.get("init_args") or {}
        if not isinstance(init_args, dict) or not all(isinstance(k, str) for k in init_args):
            raise DlstratError(f"{flag}: init_args of {shorten(path, 100)} must be a mapping of argument names to values, not {shorten(init_args, 100)}")
    elif isinstance(item, str):
        path = item
    else:
        raise DlstratError(f"{flag}: {shorten(item, 100)} is neither a name, a class path nor a {{class_path: ..., init_args: {{...}}}} mapping")
    name = path if names and path in names else ""
    cls = import_class(names[path] if name else path, base, short_module, flag)
    if not name and names:  # a class path of a named logger takes that name (and its defaults)
        name = next((n for n, p in names.items() if p.rpartition(".")[2] == cls.__name__ and cls.__module__.startswith("lightning.")), "")
    check_init_args(cls, init_args, flag, required=not names)  # loggers get their folder from the run
    return Spec(cls, dict(init_args), name or cls.__name__)


def check_init_args(cls: type, init_args: dict[str, Any], flag: str, required: bool = False) -> None:
    """Names ``cls.__init__`` does not take (unless it takes ``**kwargs``), and, if ``required``, the ones it needs."""
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return
    unknown = [k for k in init_args if k not in params or k == "self"]
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        valid = ", ".join(k for k, p in params.items() if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        raise DlstratError(f"{flag}: {cls.__name__} takes no argument {shorten(unknown[0], 80)!r}; it takes: {valid}")
    missing = [k for k, p in list(params.items())[1:] if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and k not in init_args]
    if required and missing:
        raise DlstratError(f"{flag}: {cls.__name__} needs {', '.join(missing)}: give {{class_path: {cls.__name__}, init_args: {{{missing[0]}: ...}}}}")


# --- loggers -------------------------------------------------------------------------------------------
def logger_specs(value: Any) -> list[Any]:
    """``--trainer.logger`` as the loggers to build: the CSV log first, then the rest (or Logger objects).

    ``True`` / ``None`` (Lightning's default) is the CSV log alone; ``False`` (or ``[]``) no logger.
    """
    from lightning.pytorch.loggers import Logger

    flag = "--trainer.logger"
    if value is None or value is True:
        value = ["csv"]
    if value is False:
        return []
    out: list[Any] = []
    for item in _entries(value, flag):
        if isinstance(item, Logger):  # an object, from the Python API
            out.append(item)
            continue
        if isinstance(item, str) and "." not in item and item not in LOGGER_NAMES and not item.endswith("Logger"):
            raise DlstratError(f"{flag}: unknown logger {shorten(item, 80)!r}; choose from {', '.join(LOGGER_NAMES)}, false, or give a class path with init_args")
        spec = _spec(item, Logger, "lightning.pytorch.loggers", flag, LOGGER_NAMES)
        if spec.name == "csv":
            owned = [k for k in spec.init_args if k in OWNED_CSV_ARGS]
            if owned:
                raise DlstratError(f"{flag}: the CSV log is the run directory's metrics.csv, so its {owned[0]} is not a setting; drop it")
        check_extra(spec)
        out.append(spec)
    if not out:
        return []
    csv = [s for s in out if isinstance(s, Spec) and s.name == "csv"]
    return [csv[0] if csv else Spec(import_class(LOGGER_NAMES["csv"], Logger, "", flag), {}, "csv")] + [s for s in out if not (isinstance(s, Spec) and s.name == "csv")]


def check_extra(spec: Spec) -> None:
    """A logger whose package is missing: one paragraph naming the extra to install."""
    for class_name, (extra, modules) in EXTRAS.items():
        if not spec.is_a(class_name):
            continue
        for module in modules:
            try:
                importlib.import_module(module)
                return
            except ImportError:
                continue
        raise DlstratError(
            f"--trainer.logger={spec.name} needs the {modules[0]} package, which is not installed; "
            f'install it with: pip install "lightning-dlstrat[{extra}]" (or pip install {modules[0]}), or choose another logger'
        )


# --- callbacks -----------------------------------------------------------------------------------------
def callback_specs(value: Any) -> list[Any]:
    """``--trainer.callbacks`` as the callbacks to build (or Callback objects, from the Python API)."""
    import lightning as L

    flag = "--trainer.callbacks"
    if value is None or value is False:
        return []
    out: list[Any] = []
    for item in _entries(value, flag):
        if isinstance(item, L.Callback):
            out.append(item)
            continue
        spec = _spec(item, L.Callback, "lightning.pytorch.callbacks", flag)
        if spec.is_a("ModelCheckpoint"):
            owned = [k for k in spec.init_args if k in OWNED_CHECKPOINT_ARGS]
            if owned:
                raise DlstratError(
                    f"{flag}: the run keeps its checkpoints itself (checkpoints/best.ckpt and last.ckpt in the run directory, which "
                    f"resume and export read), so ModelCheckpoint's {owned[0]} is not a setting; a ModelCheckpoint entry may change "
                    "monitor, mode, save_top_k, filename, every_n_epochs and the like of that checkpoint"
                )
            if sum(isinstance(s, Spec) and s.is_a("ModelCheckpoint") for s in out):
                raise DlstratError(f"{flag}: one ModelCheckpoint entry at most; it sets the run's own checkpoint")
        out.append(spec)
    return out


def replayable(value: Any) -> Any:
    """A logger or callbacks setting without the Python objects in it, for config.yaml (None if nothing is left)."""
    if isinstance(value, (list, tuple)):
        kept = [v for v in value if isinstance(v, (str, dict))]
        return kept if kept or not value else None
    return value if isinstance(value, (str, dict, bool)) or value is None else None
