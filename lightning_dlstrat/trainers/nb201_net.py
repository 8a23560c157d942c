"""Training a NAS-Bench-201 cell from scratch: the LightningModule for :class:`~lightning_dlstrat.spaces.nb201.NB201Network`.

The benchmark's protocol (Dong & Yang, "NAS-Bench-201", ICLR 2020, Sec. 2.3): SGD with Nesterov
momentum 0.9, learning rate 0.1 cosine-annealed to 0, weight decay 5e-4, batch 256, 200 epochs,
cross-entropy; module defaults are that network (C=16, N=5 cells a stage) on 3x32x32 CIFAR-10.
The ``nb201-net`` recipe's digits preset (``recipes/presets/nb201-net.yaml``) shrinks it for the
8x8 digits. The genotype is kept as the benchmark's string in the hyperparameters.
"""

from __future__ import annotations

from ..spaces.nb201 import BEST_CIFAR100, NB201Genotype, NB201Network
from .classifier import ClassificationTask


class NB201NetClassifier(ClassificationTask):
    """Train the NAS-Bench-201 network of a cell with the benchmark's recipe.

    Example::

        dm = DigitsDataModule()
        model = NB201NetClassifier("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
                                   in_shape=dm.dims, C=8, N=2)
        L.Trainer(max_epochs=15).fit(model, datamodule=dm)
    """

    def __init__(
        self,
        genotype: str = str(BEST_CIFAR100),  # the benchmark's string form (see spaces/nb201/genotype.py)
        in_shape: tuple[int, ...] = (3, 32, 32),
        num_classes: int = 10,
        C: int = 16,  # channels of the first stage (16 in the benchmark)
        N: int = 5,  # cells per stage (5)
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        scheduler: str = "cosine",  # to 0 over the run's real length
        label_smoothing: float = 0.0,
    ):
        # the normalised string, so hparams (and checkpoints) hold plain text
        genotype = str(NB201Genotype.parse(genotype) if isinstance(genotype, str) else genotype)
        super().__init__(num_classes, "sgd", lr, weight_decay, scheduler, label_smoothing, momentum, nesterov=True)
        self.save_hyperparameters()
        if len(in_shape) != 3:
            raise ValueError(f"NB201NetClassifier needs image data (C, H, W), got samples of shape {tuple(in_shape)}")
        self.model = NB201Network(genotype, C, N, num_classes, in_chans=in_shape[0])

    @property
    def genotype(self) -> NB201Genotype:
        return self.model.genotype
