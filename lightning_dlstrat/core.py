"""The foundation every other module may import: errors, atomic files, DDP helpers, bounded text.

It imports nothing from this package (only the standard library and torch), so networks, data,
trainers, recipes and the CLI can all depend on it without a cycle.
"""

from __future__ import annotations

import atexit
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


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
    global _gloo_exit_hook
    dist = torch.distributed
    if not _gloo_exit_hook and dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
        atexit.register(lambda: dist.destroy_process_group() if dist.is_initialized() else None)
        _gloo_exit_hook = True


_gloo_exit_hook = False  # registered in this process yet?


def mean_over_ranks(module: Any, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` averaged over the DDP ranks of the Trainer or Fabric running ``module``.

    One collective on one flat buffer; every rank must pass tensors of the same shapes. In a
    single process (or without a runner) the tensors come back as they are.
    """
    fabric, trainer = module._fabric, module._trainer
    if fabric is not None and fabric.world_size > 1:
        flat = fabric.all_reduce(torch.cat([t.reshape(-1) for t in tensors]), reduce_op="mean")  # (total,)
    elif trainer is not None and trainer.world_size > 1:
        flat = trainer.strategy.reduce(torch.cat([t.reshape(-1) for t in tensors]), reduce_op="mean")  # (total,)
    else:
        return list(tensors)
    return [f.view_as(t) for f, t in zip(flat.split([t.numel() for t in tensors]), tensors)]
