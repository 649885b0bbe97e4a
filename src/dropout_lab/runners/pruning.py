"""Pruning a run through its trial, per epoch, never at its last epoch.

A run that reached its last epoch has spent its whole budget: pruning it then saves nothing and
would store a finished run as PRUNED, without its value. So the last epoch is reported but never
pruned, in both engines.
"""

from __future__ import annotations

import lightning as L
import optuna
from optuna_integration import PyTorchLightningPruningCallback


def may_prune(epoch: int, max_epochs: int | None) -> bool:
    """True before the last epoch (``epoch`` counts from 1)."""
    return max_epochs is None or max_epochs < 0 or epoch < max_epochs


class EpochPruning(PyTorchLightningPruningCallback):
    """optuna-integration's Lightning callback, except at the run's last epoch: reported, not pruned."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        super().__init__(trial, monitor)
        self.trial, self.metric = trial, monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = pl_module.current_epoch + 1
        if trainer.sanity_checking or may_prune(epoch, trainer.max_epochs):
            super().on_validation_end(trainer, pl_module)
            return
        score = trainer.callback_metrics.get(self.metric)
        if score is not None:
            self.trial.report(float(score), step=epoch - 1)
