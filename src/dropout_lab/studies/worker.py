"""A study worker: takes queued runs (grid) or asks the sampler (tuning) until the study is done.

Any number of workers, on any number of hosts, can share one storage. Each grid run is claimed
atomically by moving its trial from WAITING to RUNNING, the way Optuna pops its own queue, so no
run is done twice (on SQLite under a file lock, see ``queue_lock``). A worker killed with SIGKILL
stops beating; the first worker (or relaunch) that notices re-queues its run once
(``RetryHeartbeatStaleTrialCallback``). Ctrl-C marks the current run failed and re-queues it
before the worker exits. Tuning goes through the ask/tell core shared with the Hydra sweeper
(:mod:`dropout_lab.studies.tuning`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage, fail_stale_trials
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from dropout_lab.config.compose import compose_train_config
from dropout_lab.studies.grid import run_overrides
from dropout_lab.studies.prepare import CELL_ATTR, CELL_CHOICES, load_study
from dropout_lab.studies.spec import StudySpec
from dropout_lab.studies.storage import (
    Heartbeat,
    heartbeat_interval,
    open_storage,
    queue_lock,
    quiet_experimental,
    retry_callback,
)
from dropout_lab.studies.trial_records import save_failure, save_record
from dropout_lab.studies.tuning import Outcome, Tuner
from dropout_lab.training.run_record import RunRecord
from dropout_lab.training.train import train

log = logging.getLogger(__name__)

#: User attribute naming the worker process (host, pid) that runs or ran a trial.
WORKER_ATTR = "worker"


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
    record_heartbeat = getattr(storage, "record_heartbeat", None) if heartbeat_interval(storage) else None
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            if record_heartbeat:
                record_heartbeat(trial_id)
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial_id
        except (optuna.exceptions.UpdateFinishedTrialError, optuna.exceptions.StorageInternalError):
            continue
    return None


def _train_trial(study: optuna.Study, trial: optuna.Trial, spec: StudySpec, settings: WorkerSettings,
                 params: dict, callbacks: list) -> RunRecord:
    """Compose and train one run for ``trial``; store its record in the trial's user attributes."""
    trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})  # who runs it
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
    with quiet_experimental():
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
    fixed = storage.get_trial(trial_id).user_attrs[CELL_ATTR]
    _suggest_fixed(trial, fixed, study.user_attrs.get(CELL_CHOICES, {}))
    with Heartbeat(storage) as heartbeat:
        heartbeat.add(trial_id)
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
    with lock, quiet_experimental():
        fail_stale_trials(study)
        return _claim_waiting(study, storage)


def run_grid(study: optuna.Study, storage: BaseStorage, spec: StudySpec, settings: WorkerSettings) -> int:
    """Work through the queue; with heartbeats, wait for running trials that may still fail."""
    done = 0
    beating = heartbeat_interval(storage) is not None
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


def search_distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    """A tuning study's search space as Optuna distributions (what ``Tuner.ask`` suggests)."""
    space: dict[str, BaseDistribution] = {}
    for key, dim in sorted(spec.search_space.items()):
        if dim.type == "categorical":
            space[key] = CategoricalDistribution(list(dim.choices or []))
            continue
        assert dim.low is not None and dim.high is not None  # checked when the study was loaded
        if dim.type == "int":
            space[key] = IntDistribution(int(dim.low), int(dim.high), log=dim.log)
        else:
            space[key] = FloatDistribution(float(dim.low), float(dim.high), log=dim.log)
    return space


def _tuning_outcome(study: optuna.Study, trial: optuna.Trial, spec: StudySpec, settings: WorkerSettings) -> Outcome:
    params = {**trial.params, "seed": spec.seeds[0]}
    callbacks = [PyTorchLightningPruningCallback(trial, spec.metric)]
    try:
        return _train_trial(study, trial, spec, settings, params, callbacks).final[spec.metric]
    except optuna.TrialPruned:
        return TrialState.PRUNED
    except Exception as exc:
        log.error("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
        return TrialState.FAIL


def run_tuning(spec: StudySpec, settings: WorkerSettings) -> int:
    """Ask, train and tell until the study holds ``n_trials`` complete or pruned trials, in total."""
    assert spec.n_trials is not None  # checked when the study was loaded
    tuner = Tuner.open(settings.storage_url, spec.name, direction=spec.direction, space=search_distributions(spec),
                       n_trials=spec.n_trials, sampler=spec.sampler, pruner=spec.pruner, max_epochs=spec.epochs,
                       base_seed=spec.seeds[0], worker_index=settings.worker_index,
                       heartbeat_interval=settings.heartbeat_interval, poll_s=settings.poll_s)
    with tuner:
        return tuner.run(lambda trials: [_tuning_outcome(tuner.study, t, spec, settings) for t in trials])


def run_worker(spec: StudySpec, settings: WorkerSettings) -> int:
    """Run one worker on an existing study; returns how many runs it finished (tuning: told)."""
    if spec.is_tuning:
        return run_tuning(spec, settings)
    storage = open_storage(settings.storage_url, settings.heartbeat_interval)
    return run_grid(load_study(spec, storage), storage, spec, settings)
