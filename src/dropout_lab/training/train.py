"""Train one run from a composed config and write its record."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import optuna
import torch
from hydra.utils import execution_whitelist, instantiate
from omegaconf import DictConfig, OmegaConf

from dropout_lab.config.targets import run_whitelist
from dropout_lab.config.validate import validate_config
from dropout_lab.errors import DropoutLabError
from dropout_lab.evaluation.checkpoint import save_checkpoint, split_tensors
from dropout_lab.evaluation.mc_evaluation import evaluate_test_time
from dropout_lab.training.activation_monitor import ActivationMonitor
from dropout_lab.training.best_weights import BestWeights, best_metrics, selection_metric
from dropout_lab.training.classifier import Classifier
from dropout_lab.training.curve_recorder import EpochRecorder
from dropout_lab.training.profiler import NoProfiler
from dropout_lab.training.run_record import RunRecord, config_hash

log = logging.getLogger(__name__)

QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.seed")


def quiet_lightning() -> None:
    """Lightning's start-up chatter (GPU/TPU available, tips) at WARNING."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


#: Refuse to start a run with less free space than this in its output folder.
MIN_FREE_BYTES = 50 * 2**20


def prepare_output_dir(folder: str | Path) -> Path:
    """Create the run's folder; fail clearly if it cannot be written or its disk is (nearly) full."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DropoutLabError(f"results folder {folder} cannot be written: {exc.strerror}") from None
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise DropoutLabError(f"results folder {folder} has only {free // 2**20} MiB free; "
                              f"at least {MIN_FREE_BYTES // 2**20} MiB are needed")
    return folder


def train(cfg: DictConfig, output_dir: str | Path, overrides: Sequence[str] = (),
          callbacks: Sequence[L.Callback] = ()) -> RunRecord:
    """Train, validate each epoch, test with noise off; return and write the run's record.

    ``final`` holds the last epoch's metrics; ``best`` those of the best-validation epoch (``metric``),
    whose weights are kept in memory and tested too when it is not the last epoch.

    Optional instruments: ``monitor.enabled`` records activation statistics into ``activations``;
    ``test_time.enabled`` adds the test-time evaluation (noise off, single noisy passes, MC over T)
    as ``test_time``; ``test_time.checkpoint`` saves the net and config to ``model.pt``.

    Bad configuration raises before any data is read. A run that diverges or raises is recorded
    as ``failed`` with its reason, and the exception is re-raised for the caller to handle.
    """
    validate_config(cfg)
    output_dir = prepare_output_dir(output_dir)
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))  # a DictConfig gives a str-keyed dict
    record = RunRecord(config=config, seed=cfg.seed,
                       config_hash=config_hash(cfg), overrides=list(overrides))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    quiet_lightning()
    L.seed_everything(cfg.seed, verbose=False)
    recorder = EpochRecorder()
    best = BestWeights(selection_metric(cfg.metric))
    monitor = (ActivationMonitor(cfg.monitor.every_n_steps, cfg.monitor.probe_size)
               if cfg.monitor.enabled else None)
    with execution_whitelist(run_whitelist(cfg)):
        datamodule = instantiate(cfg.data)
        module = Classifier(instantiate(cfg.model), **cfg.optim)
        logger = instantiate(cfg.logger) if cfg.logger else False
        # keep a user's profiler
        profiler: dict[str, Any] = {} if cfg.trainer.get("profiler") else {"profiler": NoProfiler()}
        trainer = instantiate(cfg.trainer, logger=logger, **profiler,
                              callbacks=[recorder, best, *([monitor] if monitor else []), *callbacks])
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule)
        if trainer.interrupted:
            raise KeyboardInterrupt("training interrupted")
        (tested,) = trainer.test(module, datamodule=datamodule, verbose=False)
        if cfg.test_time.checkpoint:
            save_checkpoint(module.net, record.config, output_dir)
        if cfg.test_time.enabled:
            net = module.net.to(trainer.strategy.root_device)  # teardown moved it to the CPU
            record.test_time = evaluate_test_time(net, *split_tensors(datamodule.test_dataloader()),
                                                  T=cfg.test_time.T, seed=cfg.seed,
                                                  batch_size=cfg.data.eval_batch_size)
        if best.epoch and best.epoch != len(recorder.curves):  # selection on validation: test its weights too
            best.restore(module)
            (tested_best,) = trainer.test(module, datamodule=datamodule, verbose=False)
        else:
            tested_best = tested
    except BaseException as exc:  # record why, including Ctrl-C and SystemExit, then re-raise
        record.status = "pruned" if isinstance(exc, optuna.TrialPruned) else "failed"
        record.reason = f"{type(exc).__name__}: {exc}"
        raise
    else:
        record.status = "completed"
        last = recorder.curves[-1]
        record.final = {"val_loss": last["val_loss"], "val_acc": last["val_acc"],
                        "test_loss": float(tested["test_loss"]), "test_acc": float(tested["test_acc"])}
        record.best = best_metrics(recorder.curves[best.epoch - 1], tested_best) if best.epoch else {}
        log.info("test_acc=%.4f test_loss=%.4f", record.final["test_acc"], record.final["test_loss"])
    finally:
        record.curves = recorder.curves
        record.activations = monitor.rows if monitor else []
        record.wall_time_s = time.perf_counter() - start
        record.write(output_dir)
    return record
