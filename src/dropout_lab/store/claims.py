"""Claiming queued trials (exactly once), re-queueing interrupted ones, and recording who runs a trial."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from dropout_lab.store.backends import heartbeat_interval, quiet_experimental, retry_callback

#: User attribute naming the worker process (host, pid) that runs or ran a trial.
WORKER_ATTR = "worker"


def claim_waiting(study: optuna.Study, storage: BaseStorage, trials: Iterable[FrozenTrial],
                  limit: int | None = None) -> list[int]:
    """Move WAITING trials of ``trials`` to RUNNING, in order, up to ``limit``; return the ids claimed.

    With heartbeats, a heartbeat is recorded *before* each claim: Optuna never counts a RUNNING
    trial without any heartbeat as stale, so a worker killed between its claim and its heartbeat
    thread's first beat would otherwise leave the run RUNNING forever. A trial someone else took
    meanwhile is skipped.
    """
    record_heartbeat = getattr(storage, "record_heartbeat", None) if heartbeat_interval(storage) else None
    study_id = storage.get_study_id_from_name(study.study_name)
    claimed: list[int] = []
    for trial in trials:
        if limit is not None and len(claimed) >= limit:
            break
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            if record_heartbeat:
                record_heartbeat(trial_id)
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                claimed.append(trial_id)
        except (optuna.exceptions.UpdateFinishedTrialError, optuna.exceptions.StorageInternalError):
            continue
    return claimed


def suggest_fixed(trial: optuna.Trial, fixed: Mapping[str, Any], choices: Mapping[str, list]) -> None:
    """Record a queued cell's values as params: numbers as point ranges (compatible when a grid
    grows), text as a choice among the values the study's cells take."""
    for key, value in sorted(fixed.items()):
        if isinstance(value, bool) or value is None or isinstance(value, str):
            trial.suggest_categorical(key, choices.get(key, [value]))
        elif isinstance(value, int):
            trial.suggest_int(key, value, value)
        else:
            trial.suggest_float(key, float(value), float(value))


def requeue_interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    """Fail an interrupted run and queue it again, as the heartbeat does for a killed worker."""
    with quiet_experimental():
        retry_callback()(study, study.tell(trial, state=TrialState.FAIL))


def mark_worker(trial: optuna.Trial) -> None:
    """Record which worker process (host, pid) runs ``trial``."""
    trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})
