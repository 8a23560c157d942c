"""LightningModules for image classification: a shared base and the MLP classifier.

:class:`ClassificationTask` holds what every classifier in this package trains the same way
(cross-entropy, torchmetrics accuracy, optimiser and learning-rate schedule, logging);
subclasses call ``save_hyperparameters()`` and set ``self.model``.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..models.mlp import MLP
from ..core import destroy_gloo_group_at_exit, planned_epochs, replan_cosine


class EvaluatesClassification:
    """Accuracy metrics and the validation and test steps of a classifier, logged per stage.

    Mixed into LightningModules that define ``forward`` (logits) and ``loss(logits, y)`` and call
    :meth:`configure_metrics` in ``__init__``; shared by :class:`ClassificationTask` and the DARTS
    search, which trains differently but is evaluated the same way.
    """

    def configure_metrics(self, num_classes: int) -> None:
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def _eval_step(self, batch, stage: str, metric):
        x, y = batch
        logits = self(x)
        metric(logits, y)
        self.log(f"{stage}/loss", self.loss(logits, y), sync_dist=True)
        self.log(f"{stage}/acc", metric, prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test", self.test_acc)


class ClassificationTask(EvaluatesClassification, L.LightningModule):
    """Cross-entropy training, accuracy metrics and the optimiser; networks come from subclasses."""

    # what ModelCheckpoint keeps the best of: the loss, smoother than accuracy on small val splits
    monitor, mode = "val/loss", "min"

    def __init__(
        self,
        num_classes: int = 10,
        optimizer: str = "adam",  # "adam", "adamw" or "sgd"
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: str = "none",  # "none" or "cosine" (per epoch, to 0 over the run's real length)
        label_smoothing: float = 0.0,
        momentum: float = 0.9,  # sgd only
        nesterov: bool = True,  # sgd only
    ):
        super().__init__()
        for name, value, valid in (("optimizer", optimizer, ("adam", "adamw", "sgd")), ("scheduler", scheduler, ("none", "cosine"))):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(valid)}")
        self.optimizer_name, self.lr, self.weight_decay = optimizer, lr, weight_decay
        self.scheduler_name, self.label_smoothing = scheduler, label_smoothing
        self.momentum, self.nesterov = momentum, nesterov
        self.model: nn.Module | None = None  # set by subclasses
        self.configure_metrics(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # (B, num_classes) logits

    def export_network(self) -> nn.Module:
        """The network a Hub export publishes (:mod:`lightning_dlstrat.export`)."""
        return self.model

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of one training batch; subclasses add augmentation or auxiliary losses."""
        logits = self(x)  # (B, num_classes)
        return self.loss(logits, y), logits

    def training_step(self, batch, batch_idx):
        x, y = batch  # (B, *in_shape), (B,)
        loss, logits = self.training_loss(x, y)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).argmax(dim=1)

    def setup(self, stage: str) -> None:
        destroy_gloo_group_at_exit()

    def configure_optimizers(self):
        params = self.model.parameters()
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay)
        else:
            cls = torch.optim.Adam if self.optimizer_name == "adam" else torch.optim.AdamW
            opt = cls(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler_name == "none":
            return opt
        epochs = planned_epochs(self.trainer)  # max_steps may end the run before max_epochs
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        # resumed with another length: the saved schedule continues over this one (not at lr 0)
        replan_cosine(self.__dict__.pop("_resumed_from", None), schedule)
        return {"optimizer": opt, "lr_scheduler": schedule}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self._trainer is not None:  # resuming a fit: Lightning restores the schedule from it after configure_optimizers
            self._resumed_from = checkpoint


class MLPClassifier(ClassificationTask):
    """The MLP (:class:`~lightning_dlstrat.models.mlp.MLP`) trained with Adam and cross-entropy.

    Example::

        dm = DigitsDataModule()
        model = MLPClassifier(in_shape=dm.dims, num_classes=dm.num_classes)
        L.Trainer(max_epochs=30).fit(model, datamodule=dm)
    """

    def __init__(
        self,
        in_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int = 10,
        hidden: tuple[int, ...] = (128,),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: str = "none",
        label_smoothing: float = 0.0,
    ):
        super().__init__(num_classes, optimizer, lr, weight_decay, scheduler, label_smoothing)
        self.save_hyperparameters()
        self.model = MLP(in_shape, num_classes, hidden, activation, dropout, norm)
