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


def shorten(value: Any, limit: int = 200) -> str:
    """``repr``-like text of a user's value, cut to ``limit`` characters (a 10 MB flag is not echoed back)."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split()) if len(text) < 10 * limit else text[: 10 * limit]
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text):,} characters)"


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
