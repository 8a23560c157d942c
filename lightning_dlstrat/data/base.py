"""The base LightningDataModule every dataset in this package shares.

One class owns what all datasets need the same way:
- seeded, deterministic train / val / test splits (the same seed gives the same split on every
  machine and every DDP rank);
- a *bilevel* mode for architecture search: the training split is cut into two disjoint halves,
  one for the weights and one for the architecture (DARTS, Liu et al. 2019, Sec. 2.3), served
  together as ``{"train": (x, y), "val": (x, y)}`` batches by Lightning's ``CombinedLoader``;
- per-dataset normalisation (``"standard"``: mean / std; ``"tanh"``: [-1, 1] for GAN
  generators; ``"none"``);
- loader settings that are right on CPU and GPU.

Small datasets are held as tensors in memory and served a whole batch at a time
(``TensorData.__getitems__``), which is an order of magnitude faster than per-item Python
loading for 8x8 digits or 2-D points.
"""

from __future__ import annotations

import math
import os
from typing import Literal, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

Normalization = Literal["standard", "tanh", "none"]


class DataUnavailableError(RuntimeError):
    """A dataset's files are missing and cannot be downloaded; the message says what goes where."""


class TensorData(Dataset):
    """Tensors held in memory; ``__getitems__`` lets the DataLoader fetch a batch in one index op."""

    def __init__(self, *tensors: torch.Tensor):
        assert all(len(t) == len(tensors[0]) for t in tensors), "tensors must have equal length"
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i):
        return tuple(t[i] for t in self.tensors)

    def __getitems__(self, idx: list[int]):
        idx = torch.as_tensor(idx)
        return tuple(t[idx] for t in self.tensors)


class EpochShuffleSampler(Sampler[int]):
    """A shuffle that depends only on ``(seed, epoch)``, never on the global RNG.

    Lightning calls ``set_epoch`` before every epoch, so a run resumed from a checkpoint sees
    exactly the batches an uninterrupted run would have seen. (``RandomSampler`` draws its seed
    from the global RNG, which a resumed process does not share.) Under DDP Lightning wraps it in
    a ``DistributedSamplerWrapper`` that shards and reshuffles it by epoch as well.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _collate_batch(batch):
    """``TensorData.__getitems__`` already returns stacked tensors; only lists need stacking."""
    if isinstance(batch, tuple):
        return list(batch)
    return torch.utils.data.default_collate(batch)


class BaseDataModule(L.LightningDataModule):
    """Splits, bilevel halves, normalisation and loaders; subclasses only load their raw data.

    Subclasses implement :meth:`load` returning ``(train_and_val, test)`` datasets whose items are
    ``(x, y)`` with ``x`` already normalised, and set the class attributes below.
    """

    name: str = ""
    dims: tuple[int, ...] = ()  # shape of one sample, e.g. (1, 8, 8) or (2,)
    num_classes: int = 0  # 0 for unlabelled data (2-D mixtures)
    mean: Sequence[float] = ()  # per-channel statistics used by normalization="standard"
    std: Sequence[float] = ()

    def __init__(
        self,
        data_dir: str = "data",  # where downloadable datasets live (or are downloaded to)
        batch_size: int = 64,
        val_fraction: float = 0.1,  # share of the training data held out for validation
        train_fraction: float = 1.0,  # share of the rest kept for training (a fixed, seeded subset): small-data studies
        seed: int = 0,  # seeds the splits, so they are identical on every rank and every run
        bilevel: bool = False,  # serve {"train", "val"} batches from two disjoint halves (NAS)
        drop_last: bool = False,  # drop the last, incomplete training batch (a batch of 1 breaks BatchNorm)
        normalization: Normalization = "standard",
        num_workers: int | None = None,  # None: 0 for in-memory tensors, else min(4, cpus)
        download: bool = True,
    ):
        super().__init__()
        if normalization not in ("standard", "tanh", "none"):
            raise ValueError(f"normalization must be 'standard', 'tanh' or 'none', not {normalization!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, not {num_workers}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], not {train_fraction}")
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.train_fraction = train_fraction
        self.seed = seed
        self.bilevel = bilevel
        self.drop_last = drop_last
        self.normalization = normalization
        self.num_workers = num_workers
        self.download = download
        self.train_set = self.val_set = self.test_set = None
        self.arch_set = None  # second half of the training split in bilevel mode

    # --- what subclasses provide -------------------------------------------------------------
    def load(self) -> tuple[Dataset, Dataset]:
        raise NotImplementedError

    @property
    def in_memory(self) -> bool:
        return True

    # --- normalisation -----------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map raw values in [0, 1] (images) to the configured normalisation. x: (B, *dims)."""
        if self.normalization == "none" or not self.mean:
            return x
        if self.normalization == "tanh":
            return x * 2.0 - 1.0
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype).view(shape)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`, back to [0, 1] for pictures. x: (B, *dims)."""
        if self.normalization == "none" or not self.mean:
            return x
        if self.normalization == "tanh":
            return (x + 1.0) / 2.0
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return x * std + mean

    # --- splits ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        full, self.test_set = self.load()
        g = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(len(full), generator=g).tolist()
        n_val = int(round(len(full) * self.val_fraction))
        self.val_set = Subset(full, perm[:n_val])
        train_idx = perm[n_val:]
        # the first share of the same permutation: a 10% subset lies inside the 50% one
        train_idx = train_idx[: max(1, int(round(len(train_idx) * self.train_fraction)))]
        if self.bilevel:
            half = len(train_idx) // 2
            self.train_set = Subset(full, train_idx[:half])
            self.arch_set = Subset(full, train_idx[half : 2 * half])
        else:
            self.train_set = Subset(full, train_idx)

    # --- loaders -----------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool = False, stream: int = 0) -> DataLoader:
        workers = self.num_workers
        if workers is None:
            workers = 0 if self.in_memory else min(4, os.cpu_count() or 1)
        # `stream` gives the two bilevel halves different shuffles from the same seed
        sampler = EpochShuffleSampler(len(dataset), self.seed + stream) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            # an own generator: otherwise every new iterator draws its worker seed from the
            # global RNG, so a resumed run (which adds a sanity-check pass) would drift
            generator=torch.Generator().manual_seed(self.seed + stream),
            drop_last=drop_last and len(dataset) >= self.batch_size,
            num_workers=workers,
            # page-locked memory only helps host-to-GPU copies
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
            collate_fn=_collate_batch if self.in_memory else None,
        )

    def train_dataloader(self):
        if self.bilevel:
            # Two shuffled loaders over the disjoint halves, stepped together; "max_size_cycle"
            # keeps every weight batch even if the halves differ by one batch.
            return CombinedLoader(
                {"train": self._loader(self.train_set, True, True), "val": self._loader(self.arch_set, True, True, stream=1)},
                mode="max_size_cycle",
            )
        return self._loader(self.train_set, shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self):
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self):
        return self.test_dataloader()

    def steps_per_epoch(self) -> int:
        """Optimiser steps in one training epoch on one device (for schedules)."""
        self.setup("fit")
        return max(1, math.floor(len(self.train_set) / self.batch_size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dims={self.dims}, num_classes={self.num_classes}, batch_size={self.batch_size})"
