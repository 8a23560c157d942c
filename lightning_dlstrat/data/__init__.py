"""Data: LightningDataModules behind one name -> class lookup (``dlstrat data list``)."""

from __future__ import annotations

from .base import BaseDataModule, DataUnavailableError, TensorData
from .digits import DigitsDataModule, DigitsHardDataModule
from .mixtures import Grid25DataModule, MixtureDataModule, Ring8DataModule, grid25_modes, ring8_modes
from .vision import CIFAR10DataModule, FashionMNISTDataModule, FolderDataModule, MNISTDataModule

DATAMODULES: dict[str, type[BaseDataModule]] = {
    cls.name: cls
    for cls in (
        DigitsDataModule,
        DigitsHardDataModule,
        MNISTDataModule,
        FashionMNISTDataModule,
        CIFAR10DataModule,
        FolderDataModule,
        Ring8DataModule,
        Grid25DataModule,
    )
}


def get_datamodule(name: str, **kwargs) -> BaseDataModule:
    """Build the datamodule registered under ``name``; an unknown name lists the valid ones."""
    if name not in DATAMODULES:
        raise KeyError(f"unknown dataset {name!r}; choose one of: {', '.join(DATAMODULES)}")
    return DATAMODULES[name](**kwargs)


__all__ = [
    "DATAMODULES",
    "BaseDataModule",
    "CIFAR10DataModule",
    "DataUnavailableError",
    "DigitsDataModule",
    "DigitsHardDataModule",
    "FashionMNISTDataModule",
    "FolderDataModule",
    "Grid25DataModule",
    "MNISTDataModule",
    "MixtureDataModule",
    "Ring8DataModule",
    "TensorData",
    "get_datamodule",
    "grid25_modes",
    "ring8_modes",
]
