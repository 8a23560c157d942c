"""lightning-dlstrat: Lightning modules for DARTS architecture search, GANs and classifiers.

    import lightning as L
    from lightning_dlstrat import DigitsDataModule, MLPClassifier

    dm = DigitsDataModule()
    model = MLPClassifier(in_shape=dm.dims, num_classes=dm.num_classes)
    L.Trainer(max_epochs=30).fit(model, datamodule=dm)
"""

__version__ = "0.1.0"

from .data import (  # noqa: E402
    DATAMODULES,
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    FolderDataModule,
    Grid25DataModule,
    MNISTDataModule,
    Ring8DataModule,
    get_datamodule,
)
from .models.darts_net import DARTSNetwork  # noqa: E402
from .models.darts_search import SearchNetwork  # noqa: E402
from .models.genotype import DARTS_V1, DARTS_V2, GENOTYPES, PC_DARTS, Genotype, derive_genotype, resolve_genotype  # noqa: E402
from .models.mlp import MLP  # noqa: E402
from .trainers.classifier import ClassificationTask, MLPClassifier  # noqa: E402
from .trainers.darts_net import DARTSNetClassifier  # noqa: E402
from .trainers.darts_search import DARTSSearch  # noqa: E402
from .trainers.gan import GAN  # noqa: E402
from . import timm_models  # noqa: E402,F401  (registers darts_net / dlstrat_mlp with timm)

__all__ = [
    "CIFAR10DataModule",
    "ClassificationTask",
    "DARTSNetClassifier",
    "DARTSNetwork",
    "DARTSSearch",
    "DARTS_V1",
    "DARTS_V2",
    "DATAMODULES",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "FolderDataModule",
    "GAN",
    "GENOTYPES",
    "Genotype",
    "Grid25DataModule",
    "MLP",
    "MLPClassifier",
    "MNISTDataModule",
    "PC_DARTS",
    "Ring8DataModule",
    "SearchNetwork",
    "__version__",
    "derive_genotype",
    "get_datamodule",
    "resolve_genotype",
]
