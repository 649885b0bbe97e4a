"""What happens to every member at the end of each training epoch, for one run and for a population alike.

In this order, for each member still training: its curve row (``epoch``, ``train_loss``,
``val_loss``, ``val_acc``, ``seconds``: its share of the epoch's time); ``failed`` if its training
loss is not finite (the row keeps the epoch's validation metrics); its best-validation weights
(``training/best_weights.py``); then pruning, which sees every member still training with its curves so
far and names those to stop (an Optuna glue reports each trial's signal, the mean over its members
when a trial trains several seeds, and asks ``trial.should_prune()``: a pruned trial's members stop
together). Members that end leave the population; with none left, training stops.

A run that reached its last epoch has spent its whole budget: pruning it then saves nothing and
would store a finished run as pruned, without its value. So the last epoch is reported, never pruned.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Mapping

import lightning as L

from dropout_lab.errors import RunDivergedError
from dropout_lab.training.classifier import Classifier
from dropout_lab.training.run_record import RunRecord, Status

log = logging.getLogger(__name__)

#: ``prune(training, may_prune)``: called every epoch with the members still training (position -> record, its
#: curves so far; members leaving this epoch, e.g. diverged, are left out); returns the positions to prune.
#: ``may_prune`` is False at the last epoch (report it, but do not prune).
Pruning = Callable[[Mapping[int, RunRecord], bool], Collection[int]]
CURVE_METRICS = ("train_loss", "val_loss", "val_acc")


def may_prune(epoch: int, max_epochs: int | None) -> bool:
    """True before the last epoch (``epoch`` counts from 1)."""
    return max_epochs is None or max_epochs < 0 or epoch < max_epochs


class EpochEnd(L.Callback):
    """Curve rows, divergence, best weights and pruning of every member after each training epoch."""

    def __init__(self, prune: Pruning | None = None) -> None:
        self.prune = prune
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, Classifier)
        module, epoch = pl_module, trainer.current_epoch + 1
        seconds = (time.perf_counter() - self._start) / len(module.active)
        metrics = module.epoch_metrics
        leaving: dict[int, tuple[Status, str]] = {}
        for row, number in enumerate(module.active):
            record = module.records[number]
            curve = {"epoch": epoch, **{name: metrics[name][row] for name in CURVE_METRICS if name in metrics},
                     "seconds": seconds}
            record.curves.append(curve)
            log.info("epoch %d%s: %s", epoch, f" (seed {record.seed})" if len(module.records) > 1 else "",
                     ", ".join(f"{k}={curve[k]:.4f}" for k in CURVE_METRICS if k in curve))
            loss = curve.get("train_loss", math.nan)
            if not math.isfinite(loss):
                error = RunDivergedError(f"diverged: train_loss={loss} at epoch {epoch}")
                leaving[number] = Status.FAILED, f"{type(error).__name__}: {error}"
                log.warning("run of seed %d %s", record.seed, error)
        metric = module.best.metric
        module.best.update(module.net, epoch, module.active,
                           [module.records[n].curves[-1].get(metric) for n in module.active])
        if self.prune is not None:
            allowed = may_prune(epoch, trainer.max_epochs)
            training = {n: module.records[n] for n in module.active if n not in leaving}
            pruned = self.prune(training, allowed)
            for number in pruned if allowed else ():
                if number in training:
                    leaving[number] = Status.PRUNED, f"TrialPruned: Trial was pruned at epoch {epoch}."
        module.leave(leaving)
