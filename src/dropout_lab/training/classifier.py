"""The Lightning classifier that wraps either of the chapter's networks."""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import nn

from dropout_lab.data.batches import BatchGroup

#: Types that ``nn.Module.__setattr__`` stores as plain attributes (never parameters, buffers or modules).
_PLAIN_TYPES = frozenset({str, bool, int, float, type(None)})


class Classifier(L.LightningModule):
    """Cross-entropy training with plain SGD; logs loss and accuracy per epoch for each split.

    The training step is the hot path (196 steps per epoch in the chapter setting), so it keeps
    Lightning's per-step work small (issue 6, see ``benchmarks/README.md``):

    * a ``BatchGroup`` of consecutive mini-batches (``data.batches_per_call``) is trained in one
      call, one optimizer step per mini-batch, so Lightning's per-batch loop runs once per group;
    * manual optimization (``zero_grad``, ``manual_backward``, ``step`` through Lightning's
      optimizer wrapper, so ``global_step`` and the optimizer hooks still work) instead of the
      automatic optimization's closure;
    * ``train_loss`` is summed in a tensor (no ``.item()`` sync) and logged once, at the epoch's
      last batch, as the batch-size-weighted mean: the value ``self.log(..., on_epoch=True)``
      would give, in ``trainer.callback_metrics`` before callbacks' ``on_train_epoch_end``;
    * plain attribute writes skip ``nn.Module.__setattr__``'s checks (see ``__setattr__``);
    * ``training_step`` carries its ``__signature__`` (see the end of this module).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        """Store plain values directly; everything else goes through ``nn.Module.__setattr__``.

        Lightning sets plain attributes on the module (``_current_fx_name`` and the like) about 30
        times per training step, and ``nn.Module``'s checks (``isinstance`` against the Parameter
        and Buffer metaclasses) cost about 45 us a step on this CPU. A str/bool/int/float/None
        value for a name that is not a parameter, buffer or submodule ends up as a plain attribute
        either way (``object.__setattr__`` still honours property setters).
        """
        d = self.__dict__
        if (type(value) in _PLAIN_TYPES and "_modules" in d and name not in d["_parameters"]
                and name not in d["_buffers"] and name not in d["_modules"]):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def __init__(self, net: nn.Module, lr: float = 0.1, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.net = net
        self.save_hyperparameters(ignore=["net"])
        self.automatic_optimization = False
        self._loss_sum = torch.zeros(())
        self._seen = 0

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)

    def _loss_and_accuracy(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        X, y = batch
        logits = self(X)
        loss = F.cross_entropy(logits, y)
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        return loss, accuracy

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._seen = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor] | BatchGroup, batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        assert isinstance(optimizer, LightningOptimizer)  # configure_optimizers returns one optimizer
        for X, y in batch if isinstance(batch, BatchGroup) else (batch,):
            loss = F.cross_entropy(self(X), y)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
            self._loss_sum += loss.detach() * len(y)
            self._seen += len(y)
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self.log("train_loss", self._loss_sum / self._seen, on_step=False, on_epoch=True,
                     batch_size=self._seen)
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
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=self.hparams["momentum"],
                               weight_decay=self.hparams["weight_decay"])


# Lightning's manual loop checks ``training_step``'s signature on every step
# (``is_param_in_hook_signature`` through ``inspect``, about 30 us on this CPU); with
# ``__signature__`` set, ``inspect`` returns it at once. It is the method's own signature, so what
# Lightning concludes is unchanged.
Classifier.training_step.__signature__ = inspect.signature(  # type: ignore[attr-defined]  # functions take attributes
    Classifier.training_step)
