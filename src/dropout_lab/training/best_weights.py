"""Model selection on the validation split: the best-validation epoch and its weights, kept in memory.

Every run records, beside its last-epoch metrics (``final``), the metrics at its best-validation
epoch (``best``): ``epoch``, ``val_loss``, ``val_acc`` and the test metrics of the weights it had
then. That is early stopping's answer without stopping: the same run, selected on validation only.
Lightning's ``ModelCheckpoint`` keeps the best weights in files; a chapter MLP's weights are about
1 MB, so they are kept in memory here instead.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

#: How each selection metric is optimised.
SELECTION = {"val_acc": "max", "val_loss": "min"}


def selection_metric(metric: str) -> str:
    """The run's metric when it is a validation metric, else ``val_acc``."""
    return metric if metric in SELECTION else "val_acc"


def improves(new: float, best: float | None, metric: str) -> bool:
    """True if ``new`` is strictly better than ``best`` (ties keep the earlier epoch)."""
    if best is None:
        return new == new  # not NaN
    return new > best if SELECTION[metric] == "max" else new < best


def best_row(curves: list[dict[str, float]], metric: str) -> dict[str, float] | None:
    """The curve row of the best-validation epoch (the first of equals); None without validation rows."""
    best: dict[str, float] | None = None
    for row in curves:
        if metric in row and improves(row[metric], best[metric] if best else None, metric):
            best = row
    return best


def best_metrics(row: dict[str, float], tested: dict[str, float]) -> dict[str, float]:
    """The ``best`` block of a run record: the epoch, its validation metrics, the test metrics of its weights."""
    return {"epoch": int(row["epoch"]), "val_loss": row["val_loss"], "val_acc": row["val_acc"],
            "test_loss": float(tested["test_loss"]), "test_acc": float(tested["test_acc"])}


class BestWeights(L.Callback):
    """Keeps a copy of the module's weights at the best ``metric`` seen on validation so far."""

    def __init__(self, metric: str = "val_acc") -> None:
        if metric not in SELECTION:
            raise ValueError(f"metric={metric!r}: one of {sorted(SELECTION)}")
        self.metric = metric
        self.value: float | None = None
        self.epoch = 0
        self.state: dict[str, Any] | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After the epoch's validation (as ``EpochRecorder`` reads it)."""
        if self.metric not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.metric])
        if improves(value, self.value, self.metric):
            self.value, self.epoch = value, trainer.current_epoch + 1
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def restore(self, pl_module: torch.nn.Module) -> None:
        """Load the best weights into ``pl_module`` (its last weights are overwritten)."""
        if self.state is None:
            raise RuntimeError("no validation epoch was recorded")
        pl_module.load_state_dict(self.state)
