"""A study worker: takes queued runs (grid) or asks the sampler (tuning) until the study is done.

Any number of workers, on any number of hosts, can share one storage. Each grid run is claimed
atomically by moving its trial from WAITING to RUNNING, the way Optuna pops its own queue, so no
run is done twice (on SQLite under a file lock, see ``queue_lock``). A worker killed with SIGKILL
stops beating; the first worker (or relaunch) that notices re-queues its run once
(``RetryHeartbeatStaleTrialCallback``). Ctrl-C marks the current run failed and re-queues it
before the worker exits. Tuning goes through the ask/tell core shared with the Hydra sweeper
(:mod:`dropout_lab.runners.tuner`).

Two engines: ``population=1`` (the default) trains one run at a time with ``training.train.train``
(``engine: per-run`` in its record); ``population=K`` or ``auto`` claims or asks up to K compatible
runs at once and trains them as one fused population (:mod:`dropout_lab.runners.trial_runs`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage, fail_stale_trials
from optuna.trial import TrialState

from dropout_lab.config.compose import compose_train_config
from dropout_lab.config.engine import check_precision, parse_population
from dropout_lab.config.study_grid import run_overrides
from dropout_lab.config.study_spec import StudySpec
from dropout_lab.errors import InvalidValueError
from dropout_lab.runners.pruning import EpochPruning
from dropout_lab.runners.settings import WorkerSettings, trial_output_dir, trial_overrides
from dropout_lab.runners.trial_runs import GridPacker, population_size, run_grid_population, train_trials
from dropout_lab.runners.tuner import Outcome, Tuner, study_seed
from dropout_lab.store.backends import Heartbeat, heartbeat_interval, open_storage, queue_lock, quiet_experimental
from dropout_lab.store.claims import (
    WORKER_ATTR,
    claim_waiting,
    mark_worker,
    requeue_interrupted,
    suggest_fixed,
)
from dropout_lab.store.study_setup import CELL_ATTR, CELL_CHOICES, load_study
from dropout_lab.store.trial_records import save_failure, save_record
from dropout_lab.training.run_record import RunRecord
from dropout_lab.training.train import train

log = logging.getLogger(__name__)

__all__ = ["WORKER_ATTR", "WorkerSettings", "run_worker"]


def _claim_waiting(study: optuna.Study, storage: BaseStorage) -> int | None:
    """Move one WAITING trial to RUNNING and return its id (None when the queue is empty); see ``claim_waiting``."""
    claimed = claim_waiting(study, storage, study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), limit=1)
    return claimed[0] if claimed else None


def _train_trial(study: optuna.Study, trial: optuna.Trial, spec: StudySpec, settings: WorkerSettings,
                 params: dict, callbacks: list) -> RunRecord:
    """Compose and train one run for ``trial``; store its record in the trial's user attributes."""
    mark_worker(trial)  # who runs it
    overrides = trial_overrides(spec, settings, params)
    output_dir = trial_output_dir(spec, settings, trial)
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


def _per_run_outcome(study: optuna.Study, trial: optuna.Trial, spec: StudySpec, settings: WorkerSettings,
                     params: dict, callbacks: list) -> Outcome:
    """Train one trial per-run; its outcome (metric, PRUNED or FAIL with the reason logged). Ctrl-C propagates."""
    try:
        return _train_trial(study, trial, spec, settings, params, callbacks).final[spec.metric]
    except optuna.TrialPruned:
        return TrialState.PRUNED
    except Exception as exc:
        log.error("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
        return TrialState.FAIL


def _run_grid_trial(study: optuna.Study, storage: BaseStorage, trial_id: int, spec: StudySpec,
                    settings: WorkerSettings) -> None:
    trial = optuna.Trial(study, trial_id)
    fixed = storage.get_trial(trial_id).user_attrs[CELL_ATTR]
    suggest_fixed(trial, fixed, study.user_attrs.get(CELL_CHOICES, {}))
    with Heartbeat(storage) as heartbeat:
        heartbeat.add(trial_id)
        try:
            record = _train_trial(study, trial, spec, settings, dict(trial.params), callbacks=[])
        except (KeyboardInterrupt, SystemExit):
            requeue_interrupted(study, trial)
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
    """Work through the queue (a run, or with ``population`` K > 1 or auto a population, at a time); with
    heartbeats, wait for running trials that may still fail."""
    done = 0
    beating = heartbeat_interval(storage) is not None
    lock = queue_lock(settings.storage_url)
    packer = GridPacker(study, storage, spec, settings) if settings.population != 1 else None
    while True:
        if packer is None:
            trial_id = requeue_stale_and_claim(study, storage, lock)
            claimed, fused = ([trial_id] if trial_id is not None else []), False
        else:
            claimed, fused = packer.claim(lock)
        if fused:
            run_grid_population(study, storage, claimed, spec, settings, per_run=lambda trial, params:
                                _per_run_outcome(study, trial, spec, settings, params, callbacks=[]))
        elif claimed:
            for trial_id in claimed:
                _run_grid_trial(study, storage, trial_id, spec, settings)
        if claimed:
            done += len(claimed)
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
    return _per_run_outcome(study, trial, spec, settings, params, [EpochPruning(trial, spec.metric)])


def run_tuning(spec: StudySpec, settings: WorkerSettings) -> int:
    """Ask, train and tell until the study holds ``n_trials`` complete or pruned trials, in total.

    With ``population`` K > 1 (or auto), each ask takes K trials and trains them as one population
    (``studies/populations.py``), each member pruned through its own trial.
    """
    assert spec.n_trials is not None  # checked when the study was loaded
    tuner = Tuner.open(settings.storage_url, spec.name, direction=spec.direction, space=search_distributions(spec),
                       n_trials=spec.n_trials, sampler=spec.sampler, pruner=spec.pruner, max_epochs=spec.epochs,
                       base_seed=study_seed(spec), worker_index=settings.worker_index,
                       heartbeat_interval=settings.heartbeat_interval, poll_s=settings.poll_s)
    with tuner:
        if settings.population == 1:
            return tuner.run(lambda trials: [_tuning_outcome(tuner.study, t, spec, settings) for t in trials])
        size = population_size(settings, compose_train_config(run_overrides(spec, {"seed": spec.seeds[0]})))
        log.info("study %s: asking %d trial(s) at a time, trained as one population (%s)", spec.name, size,
                 settings.population_precision)

        def evaluate(trials: list[optuna.Trial]) -> list[Outcome]:
            return train_trials(trials, [{**t.params, "seed": spec.seeds[0]} for t in trials], spec, settings,
                                tell=tuner.tell, pruning=True,
                                per_run=lambda trial, params: _tuning_outcome(tuner.study, trial, spec, settings))

        return tuner.run(evaluate, batch=size)


def check_settings(settings: WorkerSettings) -> WorkerSettings:
    """Normalise ``population`` (1, K or ``auto``); check ``population_precision`` and ``workers``, naming the field."""
    settings.population = parse_population(settings.population)
    check_precision(settings.population_precision)
    if settings.workers < 1:
        raise InvalidValueError("workers", settings.workers, "an integer >= 1")
    return settings


def run_worker(spec: StudySpec, settings: WorkerSettings) -> int:
    """Run one worker on an existing study; returns how many runs it finished (tuning: told)."""
    check_settings(settings)
    if spec.is_tuning:
        return run_tuning(spec, settings)
    storage = open_storage(settings.storage_url, settings.heartbeat_interval)
    return run_grid(load_study(spec, storage), storage, spec, settings)
