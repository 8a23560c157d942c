"""Lightning's own CLI over this package's LightningModules and datamodules (needs the ``cli`` extra).

The Typer CLI (``dlstrat``) is the front door: run directories, presets, reports. Users who
drive everything through ``lightning.pytorch.cli.LightningCLI`` and jsonargparse configs can use
the modules unchanged::

    python -m lightning_dlstrat.lightning_cli fit --model MLPClassifier --data DigitsDataModule --trainer.max_epochs=5
    python -m lightning_dlstrat.lightning_cli fit --config search.yaml     # model: {class_path: DARTSSearch, init_args: ...}
    python -m lightning_dlstrat.lightning_cli fit --print_config --model GAN --data DigitsDataModule --data.normalization=tanh

Any of the package's LightningModules (``MLPClassifier``, ``DARTSNetClassifier``,
``NB201NetClassifier``, ``DARTSSearch``, ``GAN``) and datamodules is chosen by class name. The
data's shape and class count are linked into the model (``data.dims`` -> ``model.in_shape``,
``data.num_classes`` -> ``model.num_classes``) once the datamodule is built, as ``dlstrat fit``
does; the modules with manual optimisation (``DARTSSearch``, ``GAN``) step their own optimisers
under LightningCLI as under any Trainer. ``DARTSSearch`` needs ``--data.bilevel=true``.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningCLI

# every LightningModule and datamodule imported, so that jsonargparse resolves their class names
from .data import CIFAR10DataModule, DigitsDataModule, FashionMNISTDataModule, FolderDataModule, Grid25DataModule, MNISTDataModule, Ring8DataModule  # noqa: F401
from .trainers.classifier import MLPClassifier  # noqa: F401
from .trainers.darts_net import DARTSNetClassifier  # noqa: F401
from .trainers.darts_search import DARTSSearch  # noqa: F401
from .trainers.gan import GAN  # noqa: F401
from .trainers.nb201_net import NB201NetClassifier  # noqa: F401


class DlstratLightningCLI(LightningCLI):
    """LightningCLI with the data's shape and classes linked into the model."""

    def add_arguments_to_parser(self, parser) -> None:
        # jsonargparse links into the chosen class's init_args when that class takes the argument
        parser.link_arguments("data.dims", "model.init_args.in_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")


def main(args: list[str] | None = None) -> DlstratLightningCLI:
    return DlstratLightningCLI(
        L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, args=args,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
