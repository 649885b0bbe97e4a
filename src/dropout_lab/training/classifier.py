"""The Lightning classifier that wraps either of the chapter's networks."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class Classifier(L.LightningModule):
    """Cross-entropy training with plain SGD; logs loss and accuracy per epoch for each split."""

    def __init__(self, net: nn.Module, lr: float = 0.1, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.net = net
        self.save_hyperparameters(ignore=["net"])

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)

    def _loss_and_accuracy(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        X, y = batch
        logits = self(X)
        loss = F.cross_entropy(logits, y)
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        return loss, accuracy

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss_and_accuracy(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[1]))
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> None:
        loss, accuracy = self._loss_and_accuracy(batch)
        n = len(batch[1])
        self.log(f"{split}_loss", loss, batch_size=n)
        self.log(f"{split}_acc", accuracy, batch_size=n)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum,
                               weight_decay=self.hparams.weight_decay)
