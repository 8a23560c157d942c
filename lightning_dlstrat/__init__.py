"""lightning-dlstrat: Lightning modules for DARTS architecture search, GANs and classifiers.

    import lightning as L
    from lightning_dlstrat import DigitsDataModule, MLPClassifier

    dm = DigitsDataModule()
    model = MLPClassifier(in_shape=dm.dims, num_classes=dm.num_classes)
    L.Trainer(max_epochs=30).fit(model, datamodule=dm)

Names are imported on first use (PEP 562), so ``import lightning_dlstrat`` and ``dlstrat --version``
load neither torch nor Lightning. The timm entry points (``darts_net``, ``dlstrat_mlp``) are
registered as soon as timm is imported, before or after this package.
"""

from __future__ import annotations

import importlib
import sys

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "DATAMODULES": ".data",
    "CIFAR10DataModule": ".data",
    "DigitsDataModule": ".data",
    "FashionMNISTDataModule": ".data",
    "FolderDataModule": ".data",
    "Grid25DataModule": ".data",
    "MNISTDataModule": ".data",
    "Ring8DataModule": ".data",
    "get_datamodule": ".data",
    "DARTSNetwork": ".spaces.darts.network",
    "SearchNetwork": ".spaces.darts.search",
    "DARTS_V1": ".spaces.darts.genotype",
    "DARTS_V2": ".spaces.darts.genotype",
    "GENOTYPES": ".spaces.darts.genotype",
    "PC_DARTS": ".spaces.darts.genotype",
    "Genotype": ".spaces.darts.genotype",
    "derive_genotype": ".spaces.darts.genotype",
    "resolve_genotype": ".spaces.darts.genotype",
    "MLP": ".models.mlp",
    "ClassificationTask": ".trainers.classifier",
    "MLPClassifier": ".trainers.classifier",
    "DARTSNetClassifier": ".trainers.darts_net",
    "DARTSSearch": ".trainers.darts_search",
    "GAN": ".trainers.gan",
    "zoo": ".zoo",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name], __name__)
    value = module if name == "zoo" else getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def _register_with_timm() -> None:
    """Register the timm entry points now if timm is loaded, else right after it is first imported."""
    if "timm" in sys.modules:
        importlib.import_module(".timm_models", __name__)
        return
    from ._timm_hook import install

    install(lambda: importlib.import_module(".timm_models", __name__))


_register_with_timm()
