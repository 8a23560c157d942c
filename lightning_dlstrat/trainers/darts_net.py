"""Retraining a DARTS genotype from scratch: the LightningModule for :class:`~lightning_dlstrat.spaces.darts.network.DARTSNetwork`.

The evaluation protocol of Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search"
(ICLR 2019, App. A.2; quark0/darts ``cnn/train.py``): SGD (lr 0.025, momentum 0.9, weight decay
3e-4) with cosine annealing to 0 over the run, gradient-norm clipping at 5, an auxiliary loss
weighted 0.4, drop-path whose probability grows linearly from 0 to 0.2 over the epochs, and
cutout (16x16 holes on 32x32 CIFAR images). Module defaults are the paper's CIFAR-10 network
(C=36, 20 cells); the ``darts-net`` recipe's digits preset (``recipes/presets/darts-net.yaml``)
shrinks it for the 8x8 digits.

The genotype is stored in the hyperparameters as its text form, so checkpoints hold plain
strings and load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import torch

from ..spaces.darts.network import DARTSNetwork
from ..spaces.darts.genotype import Genotype, resolve_genotype
from ..core import planned_epochs
from .classifier import ClassificationTask


def cutout(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero one ``length`` x ``length`` square per image (DeVries & Taylor 2017), as the reference.

    The centre is uniform over the image and the square is clipped at the borders, so holes near
    an edge are smaller. Random numbers come from torch's generator on ``x``'s device, seeded by
    ``seed_everything``. x: (B, C, H, W), already normalised (the hole is 0 = the mean, as in the
    reference, which applies cutout after normalisation).
    """
    if length <= 0:
        return x
    B, _, H, W = x.shape
    cy = torch.randint(0, H, (B, 1), device=x.device)  # (B, 1) hole centres
    cx = torch.randint(0, W, (B, 1), device=x.device)
    rows = torch.arange(H, device=x.device)  # (H,)
    cols = torch.arange(W, device=x.device)
    in_y = (rows >= cy - length // 2) & (rows < cy + length // 2)  # (B, H)
    in_x = (cols >= cx - length // 2) & (cols < cx + length // 2)  # (B, W)
    hole = in_y[:, :, None] & in_x[:, None, :]  # (B, H, W)
    return x * (~hole).unsqueeze(1).to(x.dtype)  # (B, C, H, W)


class DARTSNetClassifier(ClassificationTask):
    """Train the evaluation network of a genotype with the paper's recipe.

    Example::

        dm = DigitsDataModule(batch_size=64)
        model = DARTSNetClassifier("DARTS_V2", in_shape=dm.dims, num_classes=10, C=8, layers=5)
        L.Trainer(max_epochs=30).fit(model, datamodule=dm)
    """

    def __init__(
        self,
        genotype: str | Genotype = "DARTS_V2",  # built-in name, genotype file, or genotype text
        in_shape: tuple[int, ...] = (3, 32, 32),
        num_classes: int = 10,
        C: int = 36,  # initial channels (paper: 36 on CIFAR-10)
        layers: int = 20,  # cells (paper: 20)
        auxiliary: bool = True,  # auxiliary head at 2/3 depth
        auxiliary_weight: float = 0.4,  # weight of its loss (paper: 0.4)
        drop_path_prob: float = 0.2,  # reached at the last epoch, growing linearly from 0
        cutout_length: int | None = None,  # None: 16 * min(H, W) / 32 (16 on CIFAR, 4 on 8x8); 0: off
        lr: float = 0.025,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        scheduler: str = "cosine",  # "cosine" (to 0 over trainer.max_epochs, per epoch) or "none"
        grad_clip: float = 5.0,  # gradient-norm clip; --trainer.gradient_clip_val overrides it
        label_smoothing: float = 0.0,
    ):
        # the text form, so hparams (and checkpoints) hold a plain string; save_hyperparameters
        # reads this local variable
        genotype = str(resolve_genotype(genotype))
        # plain momentum SGD as the paper (no Nesterov)
        super().__init__(num_classes, "sgd", lr, weight_decay, scheduler, label_smoothing, momentum, nesterov=False)
        self.save_hyperparameters()
        if len(in_shape) != 3:
            raise ValueError(f"DARTSNetClassifier needs image data (C, H, W), got samples of shape {tuple(in_shape)}")
        self.model = DARTSNetwork(genotype, C, layers, num_classes, in_chans=in_shape[0], img_size=tuple(in_shape[1:]), auxiliary=auxiliary)
        self.cutout_length = round(16 * min(in_shape[1:]) / 32) if cutout_length is None else cutout_length

    @property
    def genotype(self) -> Genotype:
        return self.model.genotype

    def on_train_epoch_start(self) -> None:
        # scheduled drop-path (reference train.py): 0 in the first epoch, drop_path_prob * (E-1)/E in the last
        self.model.drop_path_rate = self.hparams.drop_path_prob * self.current_epoch / planned_epochs(self.trainer)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = cutout(x, self.cutout_length)  # (B, C, H, W)
        logits, aux_logits = self.model.forward_with_aux(x)  # (B, num_classes), (B, num_classes) or None
        loss = self.loss(logits, y)
        if aux_logits is not None:
            loss = loss + self.hparams.auxiliary_weight * self.loss(aux_logits, y)
        return loss, logits

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        # the paper clips the gradient norm at 5; a Trainer-level gradient_clip_val wins when set
        clip = gradient_clip_val if gradient_clip_val is not None else self.hparams.grad_clip
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm)
