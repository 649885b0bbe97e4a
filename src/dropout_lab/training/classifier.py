"""The Lightning module of every run: cross-entropy training of one network or of a population of K.

A single run is a population of one: its net maps ``[batch, ...]`` images to ``[batch, classes]``
logits (the chapter's ``DropoutMLPScratch``, ``DropoutMLPConcise``, ``NoisyMLP`` or a user's network),
and the module views them as ``[1, batch, classes]``. A :class:`~dropout_lab.models.stacked.StackedMLP`
computes all K members at once as ``[K, batch, classes]``. Everything else is the same code for both:
each member's mean cross-entropy, summed for one backward pass (so each member's gradients are those
of its own loss), per-member SGD, and per-member loss and accuracy on the validation and test sets
(the same batches for every member, or with ``data.split=per_seed`` each member's own validation rows).

``records[k]`` is the run record of member ``k``; ``active`` lists the members still training, in
the order of the stacked rows. Members leave between epochs (:meth:`leave`: diverged or pruned,
decided by ``training/epoch_end.py``); the stacked tensors, the optimizer and the batches shrink
with them, so leavers stop costing compute.

The training step is the hot path: a ``StepGroup`` of consecutive mini-batches
(``data.batches_per_call``) is trained in one call with one optimizer step per mini-batch, so
Lightning's per-batch loop runs once per group; optimization is manual (``zero_grad``,
``manual_backward``, ``step`` through Lightning's optimizer wrapper, so ``global_step`` and the
optimizer hooks still work); the losses are summed in a tensor (no ``.item()`` sync per step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from dropout_lab.data.batches import MemberBatches, MemberRows, StepGroup
from dropout_lab.models.stacked import StackedMLP
from dropout_lab.training.best_weights import BestWeights
from dropout_lab.training.optim import MemberSGD
from dropout_lab.training.run_record import RunRecord, Status

#: Called with a member's number when it leaves the population before the end (its record is final).
OnLeave = Callable[[int], None]


class Classifier(L.LightningModule):
    """Cross-entropy training with SGD for ``records`` (one per member), each with its own lr, momentum and
    weight decay; per-member epoch metrics in :attr:`epoch_metrics`, test metrics in :attr:`tested`, and
    each member's best-validation weights (on ``metric``) in :attr:`best`."""

    def __init__(self, net: nn.Module, records: Sequence[RunRecord], lr: Sequence[float],
                 momentum: Sequence[float], weight_decay: Sequence[float], metric: str = "val_acc",
                 schedule: str = "constant") -> None:
        super().__init__()
        self.net = net
        self.stacked = isinstance(net, StackedMLP)
        if not self.stacked and len(records) != 1:
            raise ValueError(f"{type(net).__name__} trains one run, not {len(records)}: use a StackedMLP")
        self.records = list(records)
        self.active = list(range(len(self.records)))
        self.optim_values = {"lr": list(lr), "momentum": list(momentum), "weight_decay": list(weight_decay)}
        self.schedule = schedule
        self.save_hyperparameters({**self.optim_values, "schedule": schedule})
        self.automatic_optimization = False
        self.best = BestWeights(metric)
        self.on_leave: OnLeave | None = None
        #: The metrics of the last training epoch, validation and test pass: name -> one value per active member.
        self.epoch_metrics: dict[str, list[float]] = {}
        self.tested: dict[str, list[float]] = {}
        #: Seconds each member spent before its first epoch (set-up) and in test passes: its share of the population's.
        self.fit_start = time.perf_counter()
        self.setup_share = 0.0
        self.test_share = 0.0
        self._loss_sum = torch.zeros(len(self.records))
        self._seen = 0
        self._eval: dict[str, torch.Tensor] = {}
        self._test_start = 0.0

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)

    def _logits(self, X: torch.Tensor, per_member: bool) -> torch.Tensor:
        """``[K, batch, classes]`` float32 logits: ``X`` holds one batch per member (training) or one for all
        (evaluation)."""
        if self.stacked:
            return self(X).float()
        return self(X[0] if per_member else X).unsqueeze(0)

    def _log(self, name: str, values: torch.Tensor, batch_size: int) -> None:
        """Log each member's value (``name``; ``name/k`` for member k of a population) for loggers and callbacks."""
        for row, number in enumerate(self.active):
            self.log(name if len(self.records) == 1 else f"{name}/{number}", values[row], on_step=False, on_epoch=True,
                     batch_size=batch_size)

    # set-up

    def on_fit_start(self) -> None:
        """Members' noise streams on the training device."""
        if isinstance(self.net, StackedMLP):
            self.net.streams.to(self.device)

    def on_train_start(self) -> None:
        self.setup_share = (time.perf_counter() - self.fit_start) / len(self.active)

    def configure_optimizers(self) -> Any:
        """SGD (per member for a population); with the ``cosine`` schedule, torch's cosine annealing over the
        trainer's epochs (stepped at each epoch's end: optimization is manual)."""
        values = self.optim_values
        optimizer: torch.optim.Optimizer
        if self.stacked:
            optimizer = MemberSGD(self.parameters(), **values)
        else:
            optimizer = torch.optim.SGD(self.parameters(), lr=values["lr"][0], momentum=values["momentum"][0],
                                        weight_decay=values["weight_decay"][0])
        if self.schedule == "constant":
            return optimizer
        epochs = self.trainer.max_epochs
        assert epochs is not None  # trainer.max_epochs >= 1 (config/validate.py)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            assert not isinstance(scheduler, list)  # configure_optimizers returns at most one scheduler
            scheduler.step()

    # training

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros(len(self.active), device=self.device)
        self._seen = 0

    def training_step(self, batch: StepGroup, batch_idx: int) -> None:
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)  # configure_optimizers returns one optimizer
        for X, y in batch:
            K, b = y.shape
            logits = self._logits(X, per_member=True)
            losses = F.cross_entropy(logits.reshape(K * b, -1), y.reshape(-1), reduction="none").view(K, b).mean(1)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(losses.sum())
            optimizer.step()
            self._loss_sum += losses.detach() * b
            self._seen += b
        if batch_idx + 1 >= self.trainer.num_training_batches:
            train_loss = self._loss_sum / self._seen
            self.epoch_metrics = {"train_loss": train_loss.tolist()}
            self._log("train_loss", train_loss, self._seen)

    # evaluation: every member on the same batches (labels ``[b]``), or each on its own (labels ``[K, b]``)

    def _start_evaluation(self) -> None:
        K = len(self.active)
        self._eval = {"loss": torch.zeros(K, device=self.device), "correct": torch.zeros(K, device=self.device),
                      "n": torch.zeros((), device=self.device)}

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        X, y = batch
        per_member = y.dim() == 2
        logits = self._logits(X, per_member=per_member)
        K, b, _ = logits.shape
        losses = F.cross_entropy(logits.reshape(K * b, -1), y.reshape(-1) if per_member else y.repeat(K),
                                 reduction="none")
        self._eval["loss"] += losses.view(K, b).sum(1)
        self._eval["correct"] += (logits.argmax(-1) == y).sum(1)
        self._eval["n"] += b

    def _evaluated(self, split: str) -> dict[str, list[float]]:
        n = self._eval["n"]
        loss, accuracy = self._eval["loss"] / n, self._eval["correct"] / n
        self._log(f"{split}_loss", loss, int(n))
        self._log(f"{split}_acc", accuracy, int(n))
        return {f"{split}_loss": loss.tolist(), f"{split}_acc": accuracy.tolist()}

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.epoch_metrics.update(self._evaluated("val"))

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()
        self._test_start = time.perf_counter()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_test_epoch_end(self) -> None:
        """The members' test metrics (noise off), and each member's share of the pass's time."""
        self.tested = self._evaluated("test")
        self.test_share += (time.perf_counter() - self._test_start) / len(self.active)

    # members leaving

    def end(self, number: int, status: Status, reason: str | None = None) -> None:
        """Record how member ``number`` ended; its wall time is its share of the set-up, of each epoch it trained
        and of the test passes so far."""
        record = self.records[number]
        record.status, record.reason = status, reason
        record.wall_time_s = self.setup_share + sum(row["seconds"] for row in record.curves) + self.test_share

    def leave(self, leaving: dict[int, tuple[Status, str]]) -> None:
        """End the members ``leaving`` (number -> status, reason) and take them out of the population.

        Called between epochs, with the trainer attached: parameters, optimizer state, noise streams and
        batches keep the other members' rows; with nobody left, training stops.
        """
        if not leaving:
            return
        for number, (status, reason) in leaving.items():
            self.end(number, status, reason)
        rows = [row for row, number in enumerate(self.active) if number not in leaving]
        if rows:
            index = torch.tensor(rows, dtype=torch.long, device=self.device)
            self.keep_rows(index)
        else:
            self.trainer.should_stop = True
        self.active = [self.active[row] for row in rows]
        for number in leaving:
            if self.on_leave is not None:
                self.on_leave(number)

    def keep_rows(self, index: torch.Tensor) -> None:
        """Keep stack rows ``index`` of the net, its best weights, the optimizer state and the batches (training,
        and each member's own validation rows where it has them)."""
        assert isinstance(self.net, StackedMLP)
        self.net.keep(index)
        self.best.keep(index)
        for optimizer in self.trainer.optimizers:
            if isinstance(optimizer, MemberSGD):
                optimizer.keep(index)
        validation = self.trainer.val_dataloaders
        datamodule = self.trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning, not declared on Trainer
        if validation is None and datamodule is not None:  # not requested yet: the data module's one object per fit
            validation = datamodule.val_dataloader()
        for batches in (self.trainer.train_dataloader, validation):
            if isinstance(batches, MemberBatches | MemberRows):
                batches.keep(index)
        self._loss_sum = self._loss_sum.index_select(0, index)
