"""Helpers shared by several test files: plain functions, callbacks and small settings.

Test files import from here (``from _helpers import ...``), never from one another or from
``conftest.py``. Fixtures live in ``conftest.py``; what is here is what a fixture cannot be:

- values needed while pytest collects (``SMALL``, ``SPACE_CASES``: parametrisation lists, and
  ``ROOT`` in module-level constants);
- Lightning callbacks that ``ddp_spawn`` pickles into its worker processes, which must be classes of
  an importable module;
- functions that test-file helpers (not only tests) call, e.g. a search run built from
  ``make_trainer`` and ``StopAfter``.

pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in pyproject.toml), and a spawned DDP worker
inherits it; the leading underscore keeps this module out of test collection.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.func import functional_call

ROOT = Path(__file__).resolve().parents[1]


# --- the CLI -----------------------------------------------------------------------------------------
def run_dir_of(output: str) -> Path:
    """The run directory a `dlstrat fit` printed."""
    line = [l for l in output.splitlines() if l.startswith("run directory: ")][-1]
    return Path(line.removeprefix("run directory: "))


def run_dirs(folder: Path) -> list[Path]:
    """The run directories in ``folder`` (``--out``), without the ``NAME-latest`` links beside them."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.is_symlink())


def dlstrat(*args: str, env: dict | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """The CLI in a real process (`python -m lightning_dlstrat`), as a user's shell runs it.

    One OpenMP thread per process: with several processes on a small machine (DDP ranks, or other
    tests), spinning OpenMP threads made a 10-second run take minutes (docs/gan.md, Threads).
    """
    return subprocess.run(
        [sys.executable, "-m", "lightning_dlstrat", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kwargs,
    )


def assert_clean_failure(result, message: str, out: Path | None = None) -> None:
    """Bad input: exit 2, the message in one paragraph, no traceback, and no run directory left behind."""
    output = result.output if hasattr(result, "output") else result.stdout + result.stderr
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert code == 2, output
    assert message in " ".join(output.split()), output
    assert "Traceback" not in output
    assert len([l for l in output.strip().splitlines() if l.startswith("Error: ")]) == 1
    if out is not None and out.exists():
        assert not [p for p in out.rglob("*") if p.is_dir() and "-" in p.name], list(out.rglob("*"))


# --- every deployable architecture, small --------------------------------------------------------------
SMALL = {  # small constructor arguments per registered architecture; a new one must be added here
    "dlstrat_mlp": dict(in_shape=(1, 8, 8), hidden=(16,)),
    "darts_net": dict(genotype="DARTS_V2", C=4, layers=3, in_chans=1, auxiliary=True),
    "dense_generator": dict(latent_dim=8, out_shape=(1, 8, 8), hidden=(16, 32)),
    "dcgan_generator": dict(latent_dim=8, out_shape=(1, 16, 16), width=8),
    "mlp_generator": dict(latent_dim=2, out_dim=2, hidden=(8, 8)),
    "conditional_dense_generator": dict(latent_dim=8, out_shape=(1, 8, 8), num_classes=3, hidden=(16, 32)),
    "conditional_dcgan_generator": dict(latent_dim=8, out_shape=(1, 16, 16), num_classes=3, width=8),
    "nb201_net": dict(genotype="|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", C=4, N=1, in_chans=1),
}


# --- every registered search space, small --------------------------------------------------------------
@dataclass(frozen=True)
class SpaceCase:
    """Small settings of one search space for the tests parametrised over ``lightning_dlstrat.spaces.SPACES``
    (the ``space`` / ``space_case`` fixtures of conftest.py), all for 1x8x8 inputs and 10 classes."""

    supernet: dict  # space.supernet(implementation, **supernet)
    network: dict  # space.network(genotype, **network)
    search: dict  # space.search_supernet(implementation, (1, 8, 8), 10, **search), DARTSSearch(space=name, **search)
    size: int  # architectures in the space: the product of the option counts of space.choices()
    search_extra: dict = field(default_factory=dict)  # DARTSSearch only: a smaller cell for the Lightning runs


SPACE_CASES = {
    "darts": SpaceCase(
        supernet=dict(C=4, layers=5, in_shape=(1, 8, 8)),
        network=dict(C=4, layers=5, in_chans=1),
        search=dict(C=4, layers=3),
        size=(1 * 3 * 6 * 10 * 7**8) ** 2,  # per cell: node k picks 2 of k+2 inputs, 7 ops each; two cells
        search_extra=dict(steps=2, multiplier=2),  # 2 intermediate nodes: tests/test_darts_search.py's TINY
    ),
    "nb201": SpaceCase(
        supernet=dict(C=4, N=1, in_chans=1),
        network=dict(C=4, N=1, in_chans=1),
        search=dict(C=4, N=1),
        size=5**6,  # 15,625 cells
    ),
}


def search_args(space: str, **kwargs) -> dict:
    """``DARTSSearch`` arguments of a tiny search in ``space`` on 1x8x8, 10-class inputs."""
    case = SPACE_CASES[space]
    return dict(in_shape=(1, 8, 8), num_classes=10, space=space, **case.search, **case.search_extra, **kwargs)


# --- DARTS search: batches, a trainer, exact hypergradients, callbacks ----------------------------------
def tiny_batches(n: int = 8, size: int = 8, classes: int = 10, dtype=torch.float32):
    """A (train, val) pair of random (x, y) batches of ``n`` 1-channel ``size`` x ``size`` images."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2 * n, 1, size, size, generator=g, dtype=dtype)  # (2n, 1, size, size)
    y = torch.randint(0, classes, (2 * n,), generator=g)
    return (x[:n], y[:n]), (x[n:], y[n:])


def make_trainer(tmp_path, **kw) -> L.Trainer:
    """A quiet CPU Trainer for 1 epoch of 3 training and 1 validation batch; ``kw`` overrides."""
    args = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=3,
        limit_val_batches=1,
        default_root_dir=str(tmp_path),
    )
    args.update(kw)
    return L.Trainer(**args)


def snapshot(tensors) -> list[torch.Tensor]:
    return [t.detach().clone() for t in tensors]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def exact_unrolled_gradient(module, train, val, w_opt):
    """(total, first-order part) of d/dalpha L_val(w'(alpha), alpha), by double backward through
    the virtual SGD step w' = w - xi (mu * momentum + grad_w L_train + wd * w)."""
    net = module.net
    group = w_opt.param_groups[0]
    xi, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
    weights, alphas = net.weight_parameters(), net.arch_parameters()
    names = {id(p): n for n, p in net.named_parameters()}
    grads = torch.autograd.grad(module.loss(net(train[0]), train[1]), weights, create_graph=True)
    unrolled = {names[id(p)]: p - xi * (g + wd * p + mu * w_opt.state[p]["momentum_buffer"]) for p, g in zip(weights, grads)}
    params = dict(net.named_parameters())
    total = torch.autograd.grad(module.loss(functional_call(net, {**params, **unrolled}, (val[0],)), val[1]), alphas)
    frozen = {k: v.detach() for k, v in unrolled.items()}
    direct = torch.autograd.grad(module.loss(functional_call(net, {**params, **frozen}, (val[0],)), val[1]), alphas)
    return total, direct


def smooth_(module: nn.Module) -> None:
    """Make the network smooth in its weights: Softplus for ReLU, average- for max-pooling, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.Softplus())
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, ceil_mode=child.ceil_mode))
        else:
            smooth_(child)


class RecordRank(L.Callback):
    """Each rank of a search saves its alpha (at the start and the end) and the first batch it trained on."""

    def __init__(self, out: str):
        self.out = out

    def on_train_start(self, trainer, pl_module):
        self.start = snapshot(pl_module.net.arch_parameters())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.first = batch["train"][0].detach().clone()

    def on_train_end(self, trainer, pl_module):
        end = snapshot(pl_module.net.arch_parameters())
        eigen = [r.get("eigenvalue") for r in pl_module.history]
        torch.save({"start": self.start, "end": end, "first": self.first, "eigen": eigen}, f"{self.out}/rank{trainer.global_rank}.pt")


class StopAfter(L.Callback):
    """Interrupt the run after ``epochs`` epochs (as a job killed right after saving its checkpoint, minus the kill)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class PauseIn(L.Callback):
    """Touch ``marker`` and sleep at the first batch of ``stage`` ("test", or "train" from its second epoch, when
    last.ckpt exists), so that a test can signal a real ``dlstrat fit`` process in that stage."""

    def __init__(self, stage: str, marker: str, seconds: float = 120):
        self.stage, self.marker, self.seconds = stage, marker, seconds

    def _pause(self):
        Path(self.marker).touch()
        import time

        time.sleep(self.seconds)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.stage == "train" and trainer.current_epoch >= 1:
            self._pause()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.stage == "test":
            self._pause()


# --- GAN runs --------------------------------------------------------------------------------------------
def tiny_gan(tmp_path, data="ring8", epochs=2, batches=5, **trainer) -> dict:
    """Settings of a short gan run (recipes.fit keywords)."""
    return dict(
        recipe="gan",
        data=data,
        seed=0,
        out=str(tmp_path),
        trainer={"max_epochs": epochs, "limit_train_batches": batches, "enable_progress_bar": False, **trainer},
    )


def checkpoint_weights(path) -> dict:
    """The state_dict of a Lightning checkpoint file."""
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def digest(module: nn.Module) -> str:
    """A hash of every tensor of ``module``'s state_dict: equal digests, bit-identical modules."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class RankDigests(L.Callback):
    """Each rank of a GAN run writes rank<N>.json: digests of G, D and the EMA G, its steps and noise seed."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        info = {
            "g": digest(pl_module.generator),
            "d": digest(pl_module.discriminator),
            "ema": digest(pl_module.generator_ema),
            "step": trainer.global_step,
            "d_steps": pl_module.d_steps,
            "noise": pl_module._noise.initial_seed(),
        }
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(info))
