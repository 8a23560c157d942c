"""Downloadable image datasets (MNIST, Fashion-MNIST, CIFAR-10) and an ImageFolder at a path.

The torchvision-style datasets are downloaded into ``data_dir`` when online, then held in memory
as tensors. Offline and absent, they raise :class:`DataUnavailableError` naming the files that are
expected and where, so a user can copy them there by hand.

CIFAR-10 is read from its *binary* distribution (``cifar-10-binary.tar.gz``: one label byte and
3,072 pixel bytes per image) rather than the Python one, because the Python batches are pickles
and this package never unpickles downloaded files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from .base import BaseDataModule, DataUnavailableError, TensorData


def _unavailable(name: str, where: Path, files: list[str], url: str, cause: Exception | None) -> DataUnavailableError:
    listed = ", ".join(files)
    why = f" ({type(cause).__name__}: {' '.join(str(cause).split())})" if cause else ""
    return DataUnavailableError(
        f"The {name} dataset is not in {where} and could not be downloaded{why}. "
        f"Expected files: {listed} in {where}. Either connect to the internet and rerun "
        f"(it downloads from {url}), copy those files there by hand, or pass --data-dir pointing "
        f"at a folder that holds them. For an offline run use --data digits."
    )


class _IdxDataModule(BaseDataModule):
    """MNIST-format datasets through torchvision (idx files, no pickles)."""

    dims = (1, 28, 28)
    num_classes = 10
    _tv_class: str = ""

    def _dataset(self, train: bool):
        import torchvision.datasets as tvd

        cls = getattr(tvd, self._tv_class)
        try:
            return cls(self.data_dir, train=train, download=self.download)
        except Exception as e:  # torchvision raises RuntimeError or URLError offline
            raw = Path(self.data_dir) / self._tv_class / "raw"
            files = [name.removesuffix(".gz") + "(.gz)" for name, _ in cls.resources]
            raise _unavailable(self.name, raw, files, cls.mirrors[0], e) from None

    def prepare_data(self):
        for train in (True, False):
            self._dataset(train)

    def load(self):
        out = []
        for train in (True, False):
            ds = self._dataset(train)
            x = ds.data.unsqueeze(1).float() / 255.0  # (N, 1, 28, 28)
            out.append(TensorData(self.normalize(x), ds.targets.long()))
        return out[0], out[1]


class MNISTDataModule(_IdxDataModule):
    """MNIST handwritten digits, 1x28x28, 10 classes (downloaded into --data-dir)."""

    name = "mnist"
    _tv_class = "MNIST"
    mean, std = (0.1307,), (0.3081,)


class FashionMNISTDataModule(_IdxDataModule):
    """Fashion-MNIST clothing images, 1x28x28, 10 classes (downloaded into --data-dir)."""

    name = "fashion-mnist"
    _tv_class = "FashionMNIST"
    mean, std = (0.2860,), (0.3530,)


class CIFAR10DataModule(BaseDataModule):
    """CIFAR-10 colour images, 3x32x32, 10 classes (the binary release, downloaded into --data-dir)."""

    name = "cifar10"
    dims = (3, 32, 32)
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)  # the DARTS reference code's CIFAR-10 statistics
    std = (0.2470, 0.2435, 0.2616)
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    md5 = "c32a1d4ab5d03f1284b67883e8d87530"
    folder = "cifar-10-batches-bin"
    train_files = [f"data_batch_{i}.bin" for i in range(1, 6)]
    test_files = ["test_batch.bin"]

    def _root(self) -> Path:
        return Path(self.data_dir) / self.folder

    def prepare_data(self):
        root = self._root()
        if all((root / f).exists() for f in self.train_files + self.test_files):
            return
        cause = None
        if self.download:
            from torchvision.datasets.utils import download_and_extract_archive

            try:
                download_and_extract_archive(self.url, self.data_dir, md5=self.md5)
                return
            except Exception as e:
                cause = e
        raise _unavailable(self.name, root, self.train_files + self.test_files, self.url, cause)

    def _read(self, files: list[str]) -> TensorData:
        raw = np.concatenate([np.fromfile(self._root() / f, dtype=np.uint8) for f in files])
        rows = raw.reshape(-1, 1 + 3 * 32 * 32)  # label byte, then R, G, B planes
        y = torch.from_numpy(rows[:, 0].astype(np.int64))  # (N,)
        x = torch.from_numpy(rows[:, 1:].copy()).view(-1, 3, 32, 32).float() / 255.0  # (N, 3, 32, 32)
        return TensorData(self.normalize(x), y)

    def load(self):
        self.prepare_data()
        return self._read(self.train_files), self._read(self.test_files)


class FolderDataModule(BaseDataModule):
    """An ``ImageFolder`` (one sub-folder per class) at ``data_dir`` (``--data-dir``).

    If ``data_dir`` has ``train/`` and ``test/`` sub-folders they are used as the splits;
    otherwise a seeded ``test_fraction`` of the images is held out. Images are resized to
    ``image_size`` and converted to ``channels`` channels.
    """

    name = "folder"
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's (timm.data.IMAGENET_DEFAULT_MEAN / _STD)

    def __init__(self, *args, image_size: int = 32, channels: int = 3, test_fraction: float = 0.2, **kwargs):
        super().__init__(*args, **kwargs)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {channels}")
        self.image_size, self.channels, self.test_fraction = image_size, channels, test_fraction
        self.dims = (channels, image_size, image_size)
        if channels == 1:
            self.mean, self.std = (0.5,), (0.5,)

    @property
    def in_memory(self) -> bool:
        return False

    def _transform(self):
        import torchvision.transforms.v2 as T

        steps = [T.Resize((self.image_size, self.image_size))]
        if self.channels == 1:
            steps.append(T.Grayscale())
        steps += [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
        if self.normalization == "standard":
            steps.append(T.Normalize(self.mean, self.std))
        elif self.normalization == "tanh":
            steps.append(T.Normalize([0.5] * self.channels, [0.5] * self.channels))
        return T.Compose(steps)

    def load(self):
        from torchvision.datasets import ImageFolder

        root = Path(self.data_dir)
        try:
            if (root / "train").is_dir() and (root / "test").is_dir():
                train = ImageFolder(root / "train", transform=self._transform())
                test = ImageFolder(root / "test", transform=self._transform())
                self.num_classes = len(train.classes)
                return train, test
            full = ImageFolder(root, transform=self._transform())
        except (FileNotFoundError, OSError) as e:
            raise DataUnavailableError(
                f"--data folder needs an image folder at {root} with one sub-folder of images per class "
                f"(or train/ and test/ folders laid out that way): {e}"
            ) from None
        self.num_classes = len(full.classes)
        perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(0)).tolist()
        n_test = int(round(len(full) * self.test_fraction))
        return Subset(full, perm[n_test:]), Subset(full, perm[:n_test])
