"""One home for a run's settings: :class:`RunConfig`, how it is resolved, and its ``config.yaml``.

Every setting of a ``dlstrat fit`` run is merged in one place, :func:`resolve`, in this order
(later wins)::

    module and datamodule defaults (their __init__ signatures)
      < the recipe's preset: `all`, then the dataset's entry (recipes/presets/NAME.yaml; a
        `variants` table instead where the recipe picks one from the settings given, e.g. --model.space)
        < --config FILE
          < flags (--max-epochs, --model.KEY=VALUE, ...)

with one rule across layers: a preset's ``max_epochs`` applies only when neither ``max_epochs``
nor ``max_steps`` was given, so ``--trainer.max_steps=5000`` alone runs 5,000 steps.

The result is written to every run directory as ``config.yaml``, in the format ``--config``
reads (LightningCLI's ``model:`` / ``data:`` / ``trainer:`` sections, with the recipe and dataset
names under ``name``); ``dlstrat fit --config RUN/config.yaml`` replays the run and
``dlstrat fit ... --print-config`` prints it without training.

Values are checked here, before any run directory exists: unknown keys (with suggestions),
types against the defaults, Lightning's bounds on ``max_epochs`` / ``max_steps``, and the
datamodule and module themselves are built once to catch what their constructors refuse.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from .core import MAX_PARAMETERS, MAX_TEXT_BYTES, DlstratError, TooLarge, gib, load_yaml, memory_limit, meta_build, rng_states, seeded_rngs, shorten
from .data import DATAMODULES
from .trainer_specs import callback_specs, logger_specs, replayable, trust_command_line

SECTIONS = ("model", "data", "trainer")
# keys of --config besides the sections; the flat ones are the CLI's flags, kept for old files
TOP_LEVEL = ("seed", "out", "threads", "options", "made_from", "data_dir", "accelerator", "devices", "strategy", "precision", "max_epochs", "genotype", "trials", "resume")
FLAT_TRAINER = ("accelerator", "devices", "strategy", "precision", "max_epochs")
# Trainer arguments the run layer owns: they point into the run directory (logger and callbacks
# are settings, checked in trainer_specs: the CSV log and the run's checkpoint stay the run's)
RUN_OWNED = ("default_root_dir", "plugins", "enable_checkpointing")


@dataclass
class RunConfig:
    """Everything one ``dlstrat fit`` uses; made by :func:`resolve`, written as ``config.yaml``."""

    model: str  # the recipe (dlstrat models list)
    data: str  # the dataset (dlstrat data list)
    model_args: dict[str, Any] = field(default_factory=dict)  # every __init__ argument of the LightningModule
    data_args: dict[str, Any] = field(default_factory=dict)  # every __init__ argument of the datamodule
    trainer: dict[str, Any] = field(default_factory=dict)  # Trainer arguments from the preset, --config and flags
    seed: int = 0  # seeds weights, splits, noise and sampling
    threads: int | None = None  # torch threads for the run (preset, --config or --threads); None: torch's default
    # where `threads` came from: "--threads" (the flag, or the Python API's threads=), "--config" or
    # "preset"; None when unset. --threads wins over OMP_NUM_THREADS, which wins over the others (run.choose_threads)
    threads_from: str | None = field(default=None, repr=False, compare=False)
    options: dict[str, Any] = field(default_factory=dict)  # the recipe's own settings (random-nas: trials, sampler, storage, ...)
    out: str = "runs"  # parent folder of run directories
    made_from: dict[str, Any] = field(default_factory=dict)  # what the run was made from (a genotype's source, ...)
    command: str = ""  # the exact command, recorded in summary.json
    resume: str | None = None  # checkpoint to continue from (in its own run directory)
    run_dir: str | None = None  # set for a resumed run: continue in this directory
    # what resolve built to check the arguments; run.fit_once trains these rather than building them again
    built: Built | None = field(default=None, init=False, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The ``config.yaml`` form (what ``--config`` reads)."""
        out = {
            "model": {"name": self.model, **plain(self.model_args)},
            "data": {"name": self.data, **plain(self.data_args)},
            # Logger and Callback objects (the Python API's) are not settings a file can replay
            "trainer": plain(replayable_trainer(self.trainer)),
            "seed": self.seed,
            "threads": self.threads,
            "options": plain(self.options),
            "out": self.out,
        }
        if self.made_from:
            out["made_from"] = plain(self.made_from)
        return out

    def to_yaml(self) -> str:
        header = f"# dlstrat fit --model {self.model} --data {self.data}: the resolved configuration\n# replay it with: dlstrat fit --config config.yaml\n"
        return header + yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, width=4096)


@dataclass
class Built:
    """The datamodule and module :func:`resolve` built from a configuration (never written to config.yaml).

    The module was built from the run's seed (as ``run.fit`` seeds), so it is the one that run would
    build; ``rng_after`` is the global RNG state right after building, which the run continues from.
    """

    datamodule: Any
    module: Any
    rng_after: dict[str, Any]
    seed: int
    model_args: dict[str, Any]  # the arguments as built, to tell whether the configuration changed since
    data_args: dict[str, Any]


class _Dumper(yaml.SafeDumper):
    """Block mappings, one setting a line; short lists inline (``in_shape: [1, 8, 8]``)."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True))


def replayable_trainer(trainer: dict[str, Any]) -> dict[str, Any]:
    """Trainer settings without the logger and callback objects the Python API may hold."""
    out = dict(trainer)
    for key in ("logger", "callbacks"):
        if key in out:
            out[key] = replayable(out[key])
            if out[key] is None and trainer[key] is not None:
                del out[key]
    return out


def plain(value: Any) -> Any:
    """JSON/YAML-ready: tuples to lists, anything else that is not a plain value to its text."""
    return json.loads(json.dumps(value, default=str))


# --- reading --config ---------------------------------------------------------------------------
def read_config_file(path: str | Path) -> dict[str, Any]:
    """A ``--config`` YAML file: the sections and top-level keys above, checked for unknown names."""
    path = Path(path)
    if not path.is_file():
        raise DlstratError(f"config file {path} does not exist")
    if path.stat().st_size > MAX_TEXT_BYTES:  # refused before it is read
        raise TooLarge(f"config file {path} is {path.stat().st_size:,} bytes, more than the {MAX_TEXT_BYTES:,} a configuration may have")
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise DlstratError(f"config file {path} is not valid YAML: it is not UTF-8 text ({shorten(str(e), 200)})") from None
    cfg = load_yaml(text, f"config file {path}") or {}  # bounded: size, depth, aliases, expanded values
    if not isinstance(cfg, dict):
        raise DlstratError(f"config file {path} must hold a mapping of option names to values, not a {type(cfg).__name__}")
    cfg = {str(k).replace("-", "_"): v for k, v in cfg.items()}
    check_keys("config", cfg, SECTIONS + TOP_LEVEL)
    for section in ("trainer", "options", "made_from"):
        if cfg.get(section) is not None and not isinstance(cfg[section], dict):
            raise DlstratError(f"config file {path}: {section!r} must be a mapping of names to values, not {shorten(cfg[section], 80)}")
    for section in ("model", "data"):
        value = cfg.get(section)
        if value is not None and not isinstance(value, (str, dict)):
            raise DlstratError(f"config file {path}: {section!r} must be a name or a mapping {{name: NAME, KEY: VALUE, ...}}, not {shorten(value, 80)}")
    return cfg


def check_keys(kind: str, keys, valid) -> None:
    """Unknown ``keys`` are an error with the closest valid ones. ``kind``: "trainer", or a flag form like "--model.KEY for mlp"."""
    valid = list(valid)
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else f" Valid keys: {', '.join(sorted(valid))}."
            what = kind.replace("KEY", shorten(key, 80)) if "KEY" in kind else f"{kind} option {shorten(key, 80)!r}"
            raise DlstratError(f"unknown {what}.{hint}")


def layer(cfg: dict[str, Any]) -> dict[str, Any]:
    """A --config mapping (or the flags, in the same shape) as one merge layer."""
    model, data = cfg.get("model"), cfg.get("data")
    out: dict[str, Any] = {
        "model_name": model.get("name") if isinstance(model, dict) else model,
        "data_name": data.get("name") if isinstance(data, dict) else data,
        "model": {k: v for k, v in model.items() if k != "name"} if isinstance(model, dict) else {},
        "data": {k: v for k, v in data.items() if k != "name"} if isinstance(data, dict) else {},
        "trainer": dict(cfg.get("trainer") or {}),
        "options": dict(cfg.get("options") or {}),
    }
    for key in FLAT_TRAINER:
        if cfg.get(key) is not None:
            out["trainer"][key] = cfg[key]
    if cfg.get("data_dir") is not None:
        out["data"]["data_dir"] = str(cfg["data_dir"])
    if cfg.get("genotype") is not None:
        out["model"]["genotype"] = cfg["genotype"]
    if cfg.get("trials") is not None:
        out["options"]["trials"] = cfg["trials"]
    for key in ("seed", "threads", "out", "resume", "made_from"):
        if cfg.get(key) is not None:
            out[key] = cfg[key]
    return out


# --- resolving ----------------------------------------------------------------------------------
def init_params(cls: type) -> dict[str, inspect.Parameter]:
    """Named ``__init__`` parameters of ``cls``, following ``*args, **kwargs`` up the MRO (most derived default wins)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        sig = inspect.signature(klass.__init__)
        for name, p in sig.parameters.items():
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                params.setdefault(name, p)
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return params


def defaults(cls: type) -> dict[str, Any]:
    return {name: p.default for name, p in init_params(cls).items() if p.default is not inspect.Parameter.empty}


def merge_presets(*entries: dict[str, Any]) -> dict[str, Any]:
    """Preset entries merged in order, section by section (a later entry's keys win within a section)."""
    merged: dict[str, Any] = {}
    for entry in entries:
        for key, value in entry.items():
            merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


def resolve(recipe, file_cfg: dict[str, Any] | None = None, flags: dict[str, Any] | None = None) -> RunConfig:
    """Merge module defaults, the recipe's preset, ``--config`` and flags into one checked :class:`RunConfig`."""
    file_layer, flag_layer = layer(file_cfg or {}), layer(flags or {})
    data = flag_layer["data_name"] or file_layer["data_name"] or recipe.default_data
    if data not in DATAMODULES:
        raise DlstratError(f"unknown dataset {shorten(data, 80)!r}; choose one of: {', '.join(DATAMODULES)}")
    user = (file_layer, flag_layer)
    # a recipe may keep other presets, and train another module, per value of a setting (darts and
    # random-nas: per --model.space, a module argument of the one and an option of the other)
    given = {**file_layer["options"], **file_layer["model"], **flag_layer["options"], **flag_layer["model"]}
    variant = recipe.variant(given) if recipe.variant is not None else None
    recipe = recipe.for_variant(variant)
    preset = recipe.preset_for(data, variant)
    if recipe.method_preset is not None:  # darts: the official recipe of the chosen --model.method
        preset = merge_presets(preset, recipe.method_preset(recipe, given, data, variant, preset))

    trainer = dict(preset.get("trainer", {}))
    if any({"max_epochs", "max_steps"} & set(u["trainer"]) for u in user):
        # the user chose the length: the preset's epochs must not cut a max_steps run short
        trainer.pop("max_epochs", None), trainer.pop("max_steps", None)
    for u in user:
        trainer.update(u["trainer"])
    # the modules of the user's own classes are imported only from flags, never from a file
    trust_command_line(flag_layer["trainer"].get("callbacks"), flag_layer["trainer"].get("logger"))
    check_trainer(trainer)

    seed = next((u["seed"] for u in reversed(user) if "seed" in u), 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise DlstratError(f"seed must be an integer in 0..2**32-1, not {shorten(seed, 80)}")
    threads, threads_from = preset.get("threads"), "preset" if preset.get("threads") is not None else None
    for where, u in zip(("--config", "--threads"), user):
        if u.get("threads") is not None:
            threads, threads_from = u["threads"], where
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise DlstratError(f"threads must be a positive integer, not {shorten(threads, 80)}")

    dm_cls = DATAMODULES[data]
    data_args = {**defaults(dm_cls), "seed": seed, **preset.get("data", {})}
    for u in user:
        data_args.update(u["data"])
    check_args(f"--data.KEY option for {data}", data_args, init_params(dm_cls))
    dm = build(dm_cls, data_args, f"dataset {data}")
    check_val_check_interval(trainer, dm)

    module_params = init_params(recipe.module)
    model_args = defaults(recipe.module)
    if "in_shape" in module_params:
        model_args["in_shape"] = list(dm.dims)
    if "num_classes" in module_params:
        if not dm.num_classes and dm.dims and len(dm.dims) == 3:
            dm.setup("fit")  # an image folder learns its classes from its sub-folders
        if dm.num_classes:
            model_args["num_classes"] = dm.num_classes
    model_args.update(preset.get("model", {}))
    recipe_options = preset.get("options", {})
    for u in user:
        # a recipe's own option may be spelled --model.KEY (random-nas: --model.sampler=tpe) when its
        # module has no argument KEY; its one home is still `options` (config.yaml writes it there)
        for key in [k for k in u["model"] if k in recipe_options and k not in module_params]:
            u["options"][key] = u["model"].pop(key)
        model_args.update(u["model"])
    check_args(f"--model.KEY option for {recipe.name}", model_args, module_params)
    check_bounds(model_args)
    made_from = dict(file_layer.get("made_from") or {})
    if recipe.prepare is not None:
        made_from.update(recipe.prepare(model_args, {**file_layer["model"], **flag_layer["model"]}, data) or {})
    with seeded_rngs(seed):  # counted on the meta device first: sizes are refused before anything is allocated
        check_size(recipe, model_args, dm, data_args, trainer)
    with seeded_rngs(seed):  # run.fit seeds the same way before it would build the module
        module = build(recipe.module, model_args, recipe.name)
        built = Built(dm, module, rng_states(), seed, copy.deepcopy(model_args), copy.deepcopy(data_args))

    options = dict(recipe_options)
    for u in user:
        options.update(u["options"])
    check_keys(f"{recipe.name} option", options, recipe_options)

    cfg = RunConfig(
        model=recipe.name, data=data, model_args=model_args, data_args=data_args, trainer=trainer, seed=seed, threads=threads, threads_from=threads_from,
        options=options, out=str(next((u["out"] for u in reversed(user) if "out" in u), "runs")), made_from=made_from,
        resume=next((str(u["resume"]) for u in reversed(user) if "resume" in u), None),
    )
    cfg.built = built
    if recipe.check is not None:
        recipe.check(cfg)
    return cfg


def check_trainer(trainer: dict[str, Any]) -> None:
    """Trainer keys and the bounds Lightning puts on the run's length, before a Trainer exists."""
    params = init_params(L.Trainer)
    owned = [k for k in trainer if k in RUN_OWNED]
    if owned:
        raise DlstratError(
            f"--trainer.{owned[0]} is set by dlstrat fit itself: checkpoints, the CSV log and the progress line all go to the run "
            "directory (choose loggers with --trainer.logger and add callbacks with --trainer.callbacks)"
        )
    logger_specs(trainer.get("logger"))  # names, class paths, init_args and installed extras, before a run directory exists
    callback_specs(trainer.get("callbacks"))
    check_keys("trainer", trainer, params)
    counts = ("max_epochs", "max_steps", "min_epochs", "log_every_n_steps")
    given = {k: v for k, v in trainer.items() if k in counts}
    check_args("--trainer.KEY option", given, {k: inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=0) for k in counts})
    trainer.update(given)  # counts written 1e4 are integers now
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if steps is None:
        steps = -1
    if steps != -1 and steps < 1:
        raise DlstratError(f"max_steps must be at least 1 (or -1 for no limit), not {steps}")
    if epochs is not None and epochs != -1 and epochs < 1:
        raise DlstratError(f"max_epochs must be at least 1, or -1 together with max_steps, not {epochs}")
    if epochs == -1 and steps == -1:
        raise DlstratError("max_epochs=-1 trains forever unless max_steps is set: give --trainer.max_steps=N, or a positive --max-epochs")
    devices = trainer.get("devices")
    if devices in (0, "0", []):
        raise DlstratError("devices=0 runs on nothing: give a count (1, 2, ...), a list of device indices (0,1) or auto")


def check_val_check_interval(trainer: dict[str, Any], dm) -> None:
    """``val_check_interval`` as a batch count must fit in an epoch, which Lightning checks only once training starts."""
    interval = trainer.get("val_check_interval")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)):
        return
    if isinstance(interval, float):
        if not 0 < interval <= 1:
            raise DlstratError(f"--trainer.val_check_interval={shorten(interval, 40)} must be a fraction of an epoch in (0, 1] or a number of batches (an integer)")
        return
    if interval < 1:
        raise DlstratError(f"--trainer.val_check_interval={interval} must be a positive number of batches, or a fraction of an epoch in (0, 1]")
    if trainer.get("check_val_every_n_epoch", 1) is None:  # counted across epochs: any count is fine
        return
    try:
        dm.setup("fit")
        loader = dm.train_dataloader()
        # a CombinedLoader (a DARTS search's two halves, "max_size_cycle") has the length of its longest loader
        batches = max(len(x) for x in loader.flattened) if hasattr(loader, "flattened") else len(loader)
    except Exception:  # a datamodule that cannot say its length here: Lightning checks it when training starts
        return
    limit = trainer.get("limit_train_batches")
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = int(batches * limit)
    if interval > batches:
        raise DlstratError(
            f"--trainer.val_check_interval={interval} is more batches than an epoch has ({batches}); give at most {batches}, a fraction of "
            "an epoch (e.g. 0.5), or add --trainer.check_val_every_n_epoch=null to count the batches across epochs"
        )


def check_args(what: str, args: dict[str, Any], params: dict[str, inspect.Parameter]) -> None:
    """Unknown names, and values whose type cannot be what the default's type says.

    ``what`` names the flag form, e.g. ``"--model.KEY option for mlp"``.
    """
    check_keys(what.replace(" option", ""), args, params)
    kinds = {bool: "true or false", int: "an integer", float: "a number", tuple: "a list", list: "a list", str: "a string"}
    for name, value in args.items():
        default = params[name].default
        wanted = type(default)
        if default is inspect.Parameter.empty or default is None or value is None or wanted not in kinds:
            continue
        if wanted is bool:
            ok = isinstance(value, bool)
        elif wanted is int:
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                args[name] = value = int(value)  # 1e3 written for a count: the user means 1000
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif wanted is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif wanted is str:
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, (list, tuple))
        if not ok:
            flag = what.split(" option")[0].replace("KEY", name)
            raise DlstratError(f"{flag} must be {kinds[wanted]} (its default is {shorten(default, 60)}), not {shorten(value, 80)}")


# Bounds of module arguments, by name, that the modules would refuse only later (an optimiser when
# training starts: exit 1 after the run directory exists) or not clearly (a negative size fails
# deep inside torch). Values of the wrong type were refused by check_args already.
POSITIVE = ("lr", "lr_g", "lr_d", "arch_lr", "C", "layers", "latent_dim", "width", "steps", "multiplier", "stem_multiplier",
            "partial_channels", "eigen_iters", "num_eval_samples", "hidden")
NONNEGATIVE = ("lr_min", "weight_decay", "arch_weight_decay", "momentum", "grad_clip", "fd_radius", "gp_weight", "r1_weight",
               "auxiliary_weight", "warmup_epochs", "eigen_every", "N")
FRACTIONS = ("dropout", "drop_path_prob", "label_smoothing", "ema_decay", "arch_betas")  # in [0, 1]


def check_bounds(model_args: dict[str, Any]) -> None:
    """Learning rates and sizes positive, weight decays and the like not negative, probabilities in [0, 1]."""
    for name, value in model_args.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        if name in POSITIVE and not all(v > 0 for v in values):
            what = "positive numbers" if isinstance(value, (list, tuple)) else "a positive number"
        elif name in NONNEGATIVE and not all(v >= 0 for v in values):
            what = "a number of at least 0"
        elif name in FRACTIONS and not all(0 <= v <= 1 for v in values):
            what = "numbers in [0, 1]" if isinstance(value, (list, tuple)) else "a number in [0, 1]"
        else:
            continue
        raise DlstratError(f"--model.{name} must be {what}, not {shorten(value, 80)}")


def check_size(recipe, model_args: dict[str, Any], dm, data_args: dict[str, Any], trainer: dict[str, Any]) -> None:
    """The module built on the meta device first: too many parameters, or (on a CPU run) more memory
    than the machine has for the weights, their gradients, Adam's two moments and one batch's
    activations, is refused with the figures, before anything is allocated."""
    import torch

    what = f"--model {recipe.name} with these settings"
    try:
        module = meta_build(lambda: recipe.module(**model_args), what)
    except TooLarge:
        raise
    except Exception:  # refused by the constructor (build() below says why), or a module that cannot be built on meta
        return
    params = sum(p.numel() for p in module.parameters())
    if params > MAX_PARAMETERS:
        raise TooLarge(f"{what} has {params:,} parameters (counted on the meta device, before anything was allocated), more than the {MAX_PARAMETERS:,} this package allows")
    batch, dims = data_args.get("batch_size"), tuple(getattr(dm, "dims", ()) or ())
    activations = 0
    if isinstance(batch, int) and dims:
        sizes: list[int] = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel() if isinstance(out, torch.Tensor) else 0))
                 for m in module.modules() if not list(m.children())]
        try:
            with torch.no_grad():
                module(torch.empty(batch, *dims, device="meta"))
            activations = sum(sizes)
        except Exception:  # a module whose forward does not take the data (a GAN's takes noise): its weights only
            activations = 0
        finally:
            for h in hooks:
                h.remove()
    accelerator = str(trainer.get("accelerator") or "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    limit = memory_limit()
    need = 4 * (4 * params + activations)  # float32 weights, gradients and two optimiser moments; one batch's layer outputs
    if on_cpu and need > limit and activations:
        try:  # a batch is never larger than the training set (the digits have 1,617 samples): measured only when it matters
            dm.setup("fit")
            samples = len(dm.train_set)
        except Exception:
            samples = batch
        if samples < batch:
            activations, batch = activations * samples // batch, samples
            need = 4 * (4 * params + activations)
    if on_cpu and need > limit:
        raise TooLarge(
            f"{what} needs at least {gib(need)} to train ({params:,} parameters, {activations:,} activation values for a batch "
            f"of {batch}; counted on the meta device), more than this machine's {gib(limit)}; make the network or --data.batch_size smaller"
        )


def build(cls: type, args: dict[str, Any], what: str):
    """``cls(**args)``, with the constructor's own checks turned into one clear message."""
    try:
        return cls(**args)
    # RuntimeError: torch refusing a size ("Trying to create tensor with negative dimension")
    except (ValueError, TypeError, KeyError, OverflowError, RuntimeError) as e:
        raise DlstratError(f"{what}: {shorten(str(e), 400)}") from None
