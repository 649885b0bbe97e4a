"""Claiming queued trials (exactly once), re-queueing interrupted ones, and recording who runs a trial."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from filelock import FileLock
from optuna.storages import BaseStorage, fail_stale_trials
from optuna.trial import FrozenTrial

from dropout_lab.compat import claim_trial
from dropout_lab.store.heartbeat import heartbeat_interval, quiet_experimental

#: User attribute naming the worker process (host, pid) that runs or ran a trial.
WORKER_ATTR = "worker"


def queue_lock(url: str) -> contextlib.AbstractContextManager:
    """A lock around claiming queued runs and re-queueing stale ones, across all local workers.

    SQLite has no row locks (Optuna's ``SELECT ... FOR UPDATE`` is a plain read there), so two
    workers can both see a stale run RUNNING and both re-queue it, and the run is then done
    twice (seen in a test: two workers relaunched at once re-queued each killed run twice). A file
    lock next to the database serializes those steps; SQLite is single-host anyway. PostgreSQL's
    row locks already serialize them, and the journal storage has no heartbeats.
    """
    if url.startswith("sqlite:///"):
        return FileLock(url[len("sqlite:///"):] + ".lock")
    return contextlib.nullcontext()


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
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        if record_heartbeat:
            record_heartbeat(trial_id)
        if claim_trial(storage, trial_id):
            claimed.append(trial_id)
    return claimed


def requeue_stale(study: optuna.Study) -> None:
    """Fail the RUNNING trials whose heartbeats stopped and queue them again (Optuna's retry callback)."""
    with quiet_experimental():
        fail_stale_trials(study)


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


def mark_worker(trial: optuna.Trial) -> None:
    """Record which worker process (host, pid) runs ``trial``."""
    trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})
