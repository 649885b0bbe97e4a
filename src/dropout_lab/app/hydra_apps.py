"""The Hydra applications behind ``dropout-lab train`` and ``dropout-lab worker``."""

from __future__ import annotations

import logging
import os
import socket
from typing import cast

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dropout_lab.config.paths import CONF_DIR
from dropout_lab.config.schema import METRICS
from dropout_lab.config.targets import check_complete, run_whitelist
from dropout_lab.errors import DropoutLabError, InvalidValueError, RunFailedError
from dropout_lab.training.run_record import Status

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

    Every run is stored as an Optuna trial (``app/recorded_runs.py``); a run whose config and seed are
    already complete in its study is not rerun. A job of ``hydra/sweeper=optuna`` trains the trial it
    was launched for (or, with the sweeper's ``population`` above 1, several trials as one population),
    pruned through it (``runners/sweeper_job.py``).
    """
    from dropout_lab.app.recorded_runs import recorded_value, run_study, store_run
    from dropout_lab.runners.sweeper_job import run_sweeper_job
    from dropout_lab.training.fit import train

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
    if cfg.metric not in METRICS:
        return _fail(InvalidValueError("metric", cfg.metric, f"one of {', '.join(METRICS)}"))
    try:
        if cfg.optuna.trial is not None or cfg.optuna.population_trials:
            record = run_sweeper_job(cfg, output_dir, hydra_cfg.sweep.dir, overrides)
        else:
            study = run_study(cfg) if cfg.optuna.record else None
            done = recorded_value(study, cfg) if study is not None else None
            if done is not None:
                return done
            record = train(cfg, output_dir, overrides=overrides, on_finish=None if study is None else
                           lambda _, rec: store_run(study, cfg, rec, output_dir, overrides))
    except DropoutLabError as exc:
        return _fail(exc)
    if record is None or record.status is Status.PRUNED:
        return float("nan")
    if record.status is not Status.COMPLETED:
        return _fail(RunFailedError(record.reason or record.status))
    return record.final[cfg.metric]


@hydra.main(config_path=str(CONF_DIR), config_name="worker")
def worker_app(cfg: DictConfig) -> float:
    """Run one study worker until the study's queue is empty; return how many runs it finished."""
    from dropout_lab.config.study_spec import load_study_ref
    from dropout_lab.runners.settings import WorkerSettings
    from dropout_lab.runners.worker import run_worker
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
