"""The Hydra applications behind ``dropout-lab train`` and ``dropout-lab worker``."""

from __future__ import annotations

import logging
import os
import socket
from typing import cast

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dropout_lab.config.paths import CONF_DIR
from dropout_lab.config.targets import check_complete, run_whitelist
from dropout_lab.errors import DropoutLabError, InvalidValueError

log = logging.getLogger("dropout_lab")

def _fail(exc: DropoutLabError) -> float:
    """In a multirun, log and go on; in a single run, end with one clear line."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        log.error("job %s failed: %s", hydra_cfg.job.num, exc)
        return float("nan")
    raise SystemExit(f"error: {exc}") from None


@hydra.main(config_path=str(CONF_DIR), config_name="train")
def train_app(cfg: DictConfig) -> float:
    """Train one run and return its optimized metric (NaN if it failed or was pruned in a multirun).

    Every run is stored as an Optuna trial (see ``OptunaTrialConfig``); a run whose config and
    seed are already complete in its study is not rerun. A run launched by
    ``hydra/sweeper=optuna`` reports each epoch to its trial, which may prune it; with the
    sweeper's ``population`` above 1, one job trains several trials as one population.
    """
    from dropout_lab.app.trial_link import linked_trial, train_sweep_population
    from dropout_lab.training.train import train

    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    overrides = cast(list[str], OmegaConf.to_container(hydra_cfg.overrides.task))  # as typed: ${...} kept
    try:  # refused before its trial is made
        check_complete(cfg)
        run_whitelist(cfg)
    except DropoutLabError as exc:
        return _fail(exc)
    if cfg.optimized_metric:  # lightning-hydra-template's key (hparams_search files) names the metric
        cfg.metric = cfg.optimized_metric
    if cfg.metric not in ("val_acc", "val_loss"):
        return _fail(InvalidValueError("metric", cfg.metric, "val_acc or val_loss"))
    if cfg.optuna.members:  # a population job of the sweeper: the sweeper reads each member's trial
        train_sweep_population(cfg, hydra_cfg.sweep.dir, overrides)
        return float("nan")
    with linked_trial(cfg, output_dir, overrides) as link:
        if link.done_value is not None:
            return link.done_value
        try:
            record = train(cfg, output_dir, overrides=overrides, callbacks=link.callbacks)
        except optuna.TrialPruned:
            return float("nan")
        except DropoutLabError as exc:
            return _fail(exc)
    return record.final[cfg.metric]


@hydra.main(config_path=str(CONF_DIR), config_name="worker")
def worker_app(cfg: DictConfig) -> float:
    """Run one study worker until the study's queue is empty; return how many runs it finished."""
    from dropout_lab.config.study_spec import load_study_ref
    from dropout_lab.runners.worker import WorkerSettings, run_worker
    from dropout_lab.store.backends import default_storage_url

    try:
        check_complete(cfg)
        spec = load_study_ref(cfg.study)  # a name or path, then field overrides
        settings = WorkerSettings(
            storage_url=cfg.storage or default_storage_url(cfg.results_dir),
            results_dir=cfg.results_dir, heartbeat_interval=cfg.heartbeat, worker_index=cfg.worker,
            extra_overrides=[f"threads={cfg.threads}", *cfg.overrides], population=cfg.population,
            population_precision=cfg.population_precision, workers=cfg.workers)
        log.info("worker %d (pid %d on %s) works on study %s", cfg.worker, os.getpid(), socket.gethostname(),
                 spec.name)
        done = run_worker(spec, settings)
    except DropoutLabError as exc:
        return _fail(exc)
    log.info("worker %d (pid %d) finished %d run(s) of study %s", cfg.worker, os.getpid(), done, spec.name)
    return float(done)
