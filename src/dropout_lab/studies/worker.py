"""A study worker: takes queued runs (grid) or asks the sampler (tuning) until the study is done.

Any number of workers, on any number of hosts, can share one storage. Each grid run is claimed
atomically by moving its trial from WAITING to RUNNING, the way Optuna pops its own queue, so no
run is done twice (on SQLite under a file lock, see ``queue_lock``). A worker killed with SIGKILL
stops beating; the first worker (or relaunch) that notices re-queues its run once
(``RetryHeartbeatStaleTrialCallback``). Ctrl-C marks the current run failed and re-queues it
before the worker exits.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, fail_stale_trials
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from dropout_lab.config.compose import compose_train_config
from dropout_lab.studies.grid import run_overrides
from dropout_lab.studies.prepare import CELL_CHOICES, load_study
from dropout_lab.studies.samplers import make_sampler
from dropout_lab.studies.spec import StudySpec
from dropout_lab.studies.storage import open_storage, queue_lock, retry_callback
from dropout_lab.studies.trial_records import save_failure, save_record
from dropout_lab.training.run_record import RunRecord
from dropout_lab.training.train import train

log = logging.getLogger(__name__)


@dataclass
class WorkerSettings:
    """Where a worker stores and writes, and what it adds to every run's overrides."""

    storage_url: str
    results_dir: str
    extra_overrides: list[str] = field(default_factory=list)
    heartbeat_interval: int | None = 30
    poll_s: float = 2.0
    worker_index: int = 0


def _claim_waiting(study: optuna.Study, storage: BaseStorage) -> int | None:
    """Move one WAITING trial to RUNNING and return its id (None when the queue is empty).

    With heartbeats, a heartbeat is recorded *before* the claim: Optuna never counts a RUNNING
    trial without any heartbeat as stale, so a worker killed between its claim and its heartbeat
    thread's first beat would otherwise leave the run RUNNING forever.
    """
    beating = is_heartbeat_enabled(storage)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if beating:
                storage.record_heartbeat(trial._trial_id)
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                return trial._trial_id
        except (optuna.exceptions.UpdateFinishedTrialError, optuna.exceptions.StorageInternalError):
            continue
    return None


def _train_trial(study: optuna.Study, trial: optuna.Trial, spec: StudySpec, settings: WorkerSettings,
                 params: dict, callbacks: list) -> RunRecord:
    """Compose and train one run for ``trial``; store its record in the trial's user attributes."""
    overrides = run_overrides(spec, params) + [f"results_dir={settings.results_dir}", *settings.extra_overrides]
    output_dir = str(Path(settings.results_dir) / "studies" / spec.name / f"trial_{trial.number:05d}")
    try:
        record = train(compose_train_config(overrides), output_dir, overrides, callbacks=callbacks)
    except BaseException as exc:
        if (Path(output_dir) / "run.json").exists():
            save_record(trial, RunRecord.read(output_dir), output_dir)
        else:
            save_failure(trial, f"{type(exc).__name__}: {exc}")
        raise
    save_record(trial, record, output_dir)
    return record


def _requeue_interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    """Fail an interrupted run and queue it again, as the heartbeat does for a killed worker."""
    retry_callback()(study, study.tell(trial, state=TrialState.FAIL))


def _suggest_fixed(trial: optuna.Trial, fixed: dict, choices: dict[str, list]) -> None:
    """Record a queued cell's values as params: numbers as point ranges (compatible when a grid
    grows), text as a choice among the values the study's cells take."""
    for key, value in sorted(fixed.items()):
        if isinstance(value, bool) or value is None or isinstance(value, str):
            trial.suggest_categorical(key, choices.get(key, [value]))
        elif isinstance(value, int):
            trial.suggest_int(key, value, value)
        else:
            trial.suggest_float(key, float(value), float(value))


def _run_grid_trial(study: optuna.Study, storage: BaseStorage, trial_id: int, spec: StudySpec,
                    settings: WorkerSettings) -> None:
    trial = optuna.Trial(study, trial_id)
    fixed = storage.get_trial_system_attrs(trial_id)["fixed_params"]
    _suggest_fixed(trial, fixed, study.user_attrs.get(CELL_CHOICES, {}))
    with get_heartbeat_thread(trial_id, storage):
        try:
            record = _train_trial(study, trial, spec, settings, dict(trial.params), callbacks=[])
        except (KeyboardInterrupt, SystemExit):
            _requeue_interrupted(study, trial)
            raise
        except Exception as exc:
            log.error("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
            study.tell(trial, state=TrialState.FAIL)
            return
    study.tell(trial, record.final[spec.metric])


def requeue_stale_and_claim(study: optuna.Study, storage: BaseStorage,
                            lock: contextlib.AbstractContextManager) -> int | None:
    """Re-queue runs whose worker died, then claim one queued run, under the storage's queue lock."""
    with lock:
        fail_stale_trials(study)
        return _claim_waiting(study, storage)


def run_grid(study: optuna.Study, storage: BaseStorage, spec: StudySpec, settings: WorkerSettings) -> int:
    """Work through the queue; with heartbeats, wait for running trials that may still fail."""
    done = 0
    beating = is_heartbeat_enabled(storage)
    lock = queue_lock(settings.storage_url)
    while True:
        trial_id = requeue_stale_and_claim(study, storage, lock)
        if trial_id is not None:
            _run_grid_trial(study, storage, trial_id, spec, settings)
            done += 1
            continue
        if beating and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            time.sleep(settings.poll_s)
            continue
        return done


def _suggest(trial: optuna.Trial, spec: StudySpec) -> dict:
    params = {}
    for key, dim in sorted(spec.search_space.items()):
        if dim.type == "categorical":
            params[key] = trial.suggest_categorical(key, list(dim.choices))
        elif dim.type == "int":
            params[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            params[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return params


def run_tuning(study: optuna.Study, spec: StudySpec, settings: WorkerSettings) -> int:
    """Optimize until the study holds ``n_trials`` complete or pruned trials, in total."""
    finished = (TrialState.COMPLETE, TrialState.PRUNED)

    def remaining() -> int:
        return spec.n_trials - len(study.get_trials(deepcopy=False, states=finished))

    def objective(trial: optuna.Trial) -> float:
        params = {**_suggest(trial, spec), "seed": spec.seeds[0]}
        callbacks = [] if spec.pruner == "none" else [PyTorchLightningPruningCallback(trial, spec.metric)]
        return _train_trial(study, trial, spec, settings, params, callbacks).final[spec.metric]

    before = remaining()
    if before <= 0:
        return 0
    study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(spec.n_trials, states=finished)],
                   catch=(Exception,), gc_after_trial=False)
    return before - max(remaining(), 0)


def run_worker(spec: StudySpec, settings: WorkerSettings) -> int:
    """Run one worker on an existing study; returns how many runs it finished."""
    storage = open_storage(settings.storage_url, settings.heartbeat_interval)
    study = load_study(spec, storage)
    if spec.is_tuning:  # distinct, reproducible sampler streams per worker and per relaunch
        study.sampler = make_sampler(spec, offset=1000 * settings.worker_index + len(study.trials))
    return run_tuning(study, spec, settings) if spec.is_tuning else run_grid(study, storage, spec, settings)
