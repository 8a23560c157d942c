"""The foundation every other module may import: errors, atomic files, DDP helpers, bounded text.

It imports nothing from this package, so networks, data, trainers, recipes and the CLI can all
depend on it without a cycle; torch is imported inside the functions that need it, so the CLI can
report an error or print ``--version`` without loading torch.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class DlstratError(Exception):
    """Bad input: the CLI prints the message (no traceback) and exits with code 2."""


class TooLarge(DlstratError):
    """Input refused for its size (text, nesting, parameters, memory), before anything was built from it."""


def shorten(value: Any, limit: int = 200) -> str:
    """``repr``-like text of a user's value, cut to ``limit`` characters (a 10 MB flag is not echoed back)."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split()) if len(text) < 10 * limit else text[: 10 * limit]
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text):,} characters)"


# --- reading text that users and downloads give ----------------------------------------------------
MAX_TEXT_BYTES = 4 << 20  # a --config file, a config.json (a run's config.yaml is a few kB)
MAX_DEPTH = 64  # nesting of mappings and lists (a config nests 5 deep at most)
MAX_ALIASES = 1_000  # YAML aliases (*name) in one document
MAX_NODES = 200_000  # values in a document once its aliases are expanded


def _yaml_loader() -> type:
    """SafeLoader that reads numbers as YAML 1.2 and a user do: ``1e-3`` and ``1e308`` are floats.

    YAML 1.1 (PyYAML's default) needs a dot and a signed exponent (``1.0e-3``), and reads ``1e-3``
    as the text "1e-3".
    """
    global _LOADER
    if _LOADER is None:
        import re

        import yaml

        class Loader(yaml.SafeLoader):
            pass

        Loader.add_implicit_resolver(
            "tag:yaml.org,2002:float",
            re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
            list("-+0123456789."),
        )
        _LOADER = Loader
    return _LOADER


_LOADER: type | None = None


def load_yaml(text: str, what: str) -> Any:
    """YAML text from a user or a file, bounded before anything is built from it.

    Refused with a :class:`DlstratError` naming ``what``: more than :data:`MAX_TEXT_BYTES`, nesting
    deeper than :data:`MAX_DEPTH`, more than :data:`MAX_ALIASES` aliases, more than
    :data:`MAX_NODES` values once aliases are expanded (an "alias bomb" expands a few hundred bytes
    into billions of values), or an alias that contains itself. The events are counted first
    (PyYAML's parser keeps its own stack, so depth costs no recursion), then the nodes are composed,
    which share aliased subtrees, and their expanded size is computed without expanding them.
    """
    import yaml

    if len(text) > MAX_TEXT_BYTES:
        raise TooLarge(f"{what} is longer than the {MAX_TEXT_BYTES:,} characters a configuration may have ({len(text):,} characters)")
    loader = _yaml_loader()
    try:
        depth = aliases = 0
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise TooLarge(f"{what} nests lists and mappings more than {MAX_DEPTH} deep; a configuration never needs that")
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise TooLarge(f"{what} has more than {MAX_ALIASES:,} aliases (*name); a configuration never needs that")
        node = yaml.compose(text, Loader=loader)
        if node is None:
            return None
        size: dict[int, int] = {}

        def expanded(n: Any, open_: set[int]) -> int:  # depth <= MAX_DEPTH, so the recursion is bounded
            key = id(n)
            if key in size:
                return size[key]
            if key in open_:
                raise TooLarge(f"{what} has an alias that contains itself (a recursive &anchor); a configuration cannot be infinite")
            open_.add(key)
            if isinstance(n, yaml.SequenceNode):
                total = 1 + sum(expanded(c, open_) for c in n.value)
            elif isinstance(n, yaml.MappingNode):
                total = 1 + sum(expanded(k, open_) + expanded(v, open_) for k, v in n.value)
            else:
                total = 1
            open_.discard(key)
            size[key] = min(total, MAX_NODES + 1)
            return size[key]

        if expanded(node, set()) > MAX_NODES:
            raise TooLarge(f"{what} expands to more than {MAX_NODES:,} values (through its aliases); a configuration never needs that")
        return loader(text).get_single_data()
    except (yaml.YAMLError, ValueError, RecursionError, MemoryError) as e:  # ValueError: an integer of more digits than Python converts
        raise DlstratError(f"{what} is not valid YAML: {shorten(' '.join(str(e).split()), 300)}") from None


def load_json(text: str | bytes, what: str) -> Any:
    """JSON from a file or a download, bounded like :func:`load_yaml` (size and nesting) before it is parsed."""
    import re

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise DlstratError(f"{what} is not UTF-8 text") from None
    if len(text) > MAX_TEXT_BYTES:
        raise TooLarge(f"{what} is longer than the {MAX_TEXT_BYTES:,} characters it may have ({len(text):,} characters)")
    depth = deepest = 0
    for bracket in re.findall(r"[][{}]", re.sub(r'"(?:[^"\\]|\\.)*"', "", text)):  # outside strings: the brackets that nest
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in "]}":
            depth -= 1
    if deepest > MAX_DEPTH:
        raise TooLarge(f"{what} nests lists and objects more than {MAX_DEPTH} deep; it is not a file this package wrote")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise DlstratError(f"{what} is not valid JSON ({shorten(str(e), 200)})") from None


# --- sizes of networks, counted before anything is allocated ------------------------------------------
MAX_PARAMETERS = 500_000_000  # parameters of one network (this package's networks have up to a few million)
MAX_TENSORS = 10_000  # parameter and buffer tensors of one network (a 20-cell DARTS network has about 1,500)


def meta_build(factory: Any, what: str) -> Any:
    """``factory()`` built on the meta device (shapes only, no memory), refused early when it grows too large.

    Every tensor the constructor creates is counted as it is created, so a network of a million
    layers is refused after :data:`MAX_TENSORS` tensors (a few seconds) instead of being built for
    hours, and one of 10^11 parameters after the first tensor that passes :data:`MAX_PARAMETERS`.
    Raises :class:`TooLarge`; whatever the constructor itself raises passes through.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    factories = {
        torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint, torch.tensor, torch.as_tensor,
        torch.eye, torch.arange, torch.linspace, torch.empty_like, torch.zeros_like, torch.ones_like, torch.full_like,
        torch.rand_like, torch.randn_like, torch.empty_strided,
    }

    class Budget(TorchFunctionMode):
        tensors = elements = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in factories and isinstance(out, torch.Tensor):
                self.tensors += 1
                self.elements += out.numel()
                if self.elements > MAX_PARAMETERS:
                    raise TooLarge(f"{what} has more than {MAX_PARAMETERS:,} parameters (at least {self.elements:,} weights and buffers, counted on the meta device before anything was allocated)")
                if self.tensors > MAX_TENSORS:
                    raise TooLarge(f"{what} has more than {MAX_TENSORS:,} weight tensors (counted on the meta device before anything was allocated): far more layers than this package's networks have")
            return out

    with torch.device("meta"), Budget():
        return factory()


def memory_limit() -> int:
    """Bytes of memory this machine has (the limit a CPU run's estimate is held to)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return 1 << 40


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


# --- atomic files ------------------------------------------------------------------------------
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def shell_command(*words: Any) -> str:
    """A command to paste into a POSIX shell: each word quoted as it needs (``shlex.join``), so paths with spaces or quotes work."""
    import shlex

    return shlex.join(str(w) for w in words)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120, bbox_inches: str | None = "tight") -> None:
    """Render a matplotlib ``Figure`` on the Agg canvas (never a GUI backend, no pyplot state) and write the PNG atomically."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # attach the Agg canvas
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches=bbox_inches)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


# --- many processes ----------------------------------------------------------------------------
def destroy_gloo_group_at_exit() -> None:
    """Destroy this process's gloo process group when it exits, as Lightning does only for NCCL.

    Call from a LightningModule's ``setup``, which runs in every DDP process once the group
    exists. A gloo group still alive at interpreter shutdown can kill the process with SIGABRT
    ("terminate called without an active exception"): its worker threads still hold tensors
    while Python is torn down (pytorch/pytorch#179291, #190489).
    """
    import torch.distributed as dist

    global _gloo_exit_hook
    if not _gloo_exit_hook and dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
        atexit.register(lambda: dist.destroy_process_group() if dist.is_initialized() else None)
        _gloo_exit_hook = True


_gloo_exit_hook = False  # registered in this process yet?


def mean_over_ranks(module: Any, tensors: list) -> list:
    """``tensors`` averaged over the DDP ranks of the Trainer or Fabric running ``module``.

    One collective on one flat buffer; every rank must pass tensors of the same shapes. In a
    single process (or without a runner) the tensors come back as they are.
    """
    import torch

    fabric, trainer = module._fabric, module._trainer
    if fabric is not None and fabric.world_size > 1:
        flat = fabric.all_reduce(torch.cat([t.reshape(-1) for t in tensors]), reduce_op="mean")  # (total,)
    elif trainer is not None and trainer.world_size > 1:
        flat = trainer.strategy.reduce(torch.cat([t.reshape(-1) for t in tensors]), reduce_op="mean")  # (total,)
    else:
        return list(tensors)
    return [f.view_as(t) for f, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


# --- the global random number generators -----------------------------------------------------------
def rng_states() -> dict[str, Any]:
    """The CPU-side global RNG states that building a module draws from: torch's, Python's ``random``, NumPy's."""
    import random

    import numpy as np
    import torch

    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    import random

    import numpy as np
    import torch

    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])


@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Inside: the CPU-side global RNGs seeded as ``lightning.seed_everything(seed)`` seeds them; after: as before.

    So :func:`lightning_dlstrat.config.resolve` builds a run's module from the run's seed without
    changing the caller's random state (CUDA's generators are neither seeded nor touched).
    """
    import random

    import numpy as np
    import torch

    saved = rng_states()
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        set_rng_states(saved)


def omp_threads() -> int | None:
    """The thread count ``OMP_NUM_THREADS`` sets, when it is a positive integer (None otherwise)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) >= 1 else None


def launch_rank() -> int:
    """This process's global rank as its launcher set it, before any Trainer or process group exists.

    torchrun and Lightning's own ``ddp`` launcher set ``RANK`` or ``LOCAL_RANK`` / ``NODE_RANK``
    in the environment; SLURM sets ``SLURM_PROCID`` for each task. 0 for a plain single process.
    Used to let only rank 0 create the run directory (:mod:`lightning_dlstrat.run`).
    """

    def env(name: str) -> int:
        value = os.environ.get(name, "0")
        return int(value) if value.isdigit() else 0

    if "RANK" in os.environ:
        return env("RANK")
    if env("SLURM_NTASKS") > 1 and "SLURM_PROCID" in os.environ:
        return env("SLURM_PROCID")
    return env("NODE_RANK") + env("LOCAL_RANK")  # 0 only for the first process of the first node


def replan_cosine(checkpoint: dict[str, Any] | None, scheduler: Any, index: int = 0, optimizer_index: int = 0) -> None:
    """Let a resumed cosine schedule continue over the run's new length instead of the old one.

    Lightning restores a ``CosineAnnealingLR``'s saved state over the one ``configure_optimizers``
    just planned: resumed with a larger ``max_epochs``, ``T_max`` stays the old run's length, and
    the learning rate its end value (0, or ``eta_min``), which the schedule's multiplicative update
    keeps there, so every resumed epoch trains at learning rate 0. Called from
    ``configure_optimizers`` with the checkpoint the module's ``on_load_checkpoint`` kept (Lightning
    restores optimisers and schedules after both), this rewrites the saved state before it is
    restored: ``T_max`` is the new plan, and the learning rate is the new schedule's at the saved
    epoch (its closed form), so the run goes on as if it had been planned that long from the start.
    ``index``: the scheduler's place in ``lr_schedulers``; ``optimizer_index``: its optimiser's.
    """
    if not checkpoint or type(scheduler).__name__ != "CosineAnnealingLR":
        return
    states, optimizers = checkpoint.get("lr_schedulers") or [], checkpoint.get("optimizer_states") or []
    if index >= len(states) or optimizer_index >= len(optimizers) or states[index].get("T_max") in (None, scheduler.T_max):
        return
    state, t_max = states[index], scheduler.T_max
    epoch, eta_min = min(state["last_epoch"], t_max), state.get("eta_min", 0.0)
    lrs = [eta_min + (base - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2 for base in state["base_lrs"]]
    state["T_max"], state["_last_lr"] = t_max, lrs
    for group, lr in zip(optimizers[optimizer_index]["param_groups"], lrs):
        group["lr"] = lr


def planned_epochs(trainer: Any, steps_per_batch: float = 1.0) -> int:
    """How many epochs ``trainer`` will really run: ``max_epochs``, or fewer when ``max_steps`` stops it first.

    ``steps_per_batch``: how much ``trainer.global_step`` grows per training batch (2 for a DARTS
    search, whose two optimisers both step; 1 / n_critic for a GAN, which counts generator
    steps). Schedules planned per epoch (cosine, drop-path) read this instead of ``max_epochs``,
    so ``max_steps`` alone, or both together, give the schedule the run's real length.
    """
    if trainer.train_dataloader is None:
        trainer.fit_loop.setup_data()  # what estimated_stepping_batches does to learn the batch count
    batches_per_epoch = trainer.num_training_batches
    by_epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
    by_steps = trainer.max_steps / steps_per_batch if trainer.max_steps not in (None, -1) else math.inf
    batches = min(by_epochs * batches_per_epoch, by_steps)
    if math.isinf(batches) or batches_per_epoch in (0, math.inf):
        raise ValueError("the run has no planned end (max_epochs=-1 and no max_steps): set max_epochs or max_steps")
    return max(1, math.ceil(batches / batches_per_epoch))
