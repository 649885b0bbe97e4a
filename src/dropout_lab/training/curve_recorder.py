"""A Lightning callback that keeps the per-epoch curves and stops a diverging run."""

from __future__ import annotations

import logging
import math
import time

import lightning as L

from dropout_lab.errors import RunDivergedError

log = logging.getLogger(__name__)

CURVE_METRICS = ("train_loss", "val_loss", "val_acc")


class EpochRecorder(L.Callback):
    """Stores ``train_loss``, ``val_loss``, ``val_acc`` and seconds for every epoch.

    Raises :class:`RunDivergedError` at the end of the first epoch whose training loss is not finite.
    """

    def __init__(self) -> None:
        self.curves: list[dict[str, float]] = []
        self._epoch_start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row: dict[str, float] = {"epoch": trainer.current_epoch + 1}
        for name in CURVE_METRICS:
            if name in metrics:
                row[name] = float(metrics[name])
        row["seconds"] = time.perf_counter() - self._epoch_start
        self.curves.append(row)
        log.info("epoch %d: %s", row["epoch"],
                 ", ".join(f"{k}={row[k]:.4f}" for k in CURVE_METRICS if k in row))
        loss = row.get("train_loss", math.nan)
        if not math.isfinite(loss):
            raise RunDivergedError(f"diverged: train_loss={loss} at epoch {row['epoch']}")
