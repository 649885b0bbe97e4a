"""Claiming queued trials (exactly once), re-queueing interrupted ones, and recording who runs a trial."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
import sqlalchemy
from filelock import FileLock
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from dropout_lab.compat import claim_trial
from dropout_lab.store.heartbeat import heartbeat_interval, quiet_experimental, retry_callback

#: User attribute naming the worker process (host, pid) that runs or ran a trial.
WORKER_ATTR = "worker"
#: The PostgreSQL advisory lock key of the queue steps ("drop" in ASCII): one lock per database.
QUEUE_LOCK_KEY = 0x64726F70


class AdvisoryLock:
    """PostgreSQL's session advisory lock (``pg_advisory_lock``) around the queue steps of all workers, on any host.

    Held on a connection of its own, opened at the first use and kept; the server releases a session's
    locks when it ends, so a SIGKILLed worker never leaves the lock held.
    """

    def __init__(self, url: str, key: int = QUEUE_LOCK_KEY) -> None:
        self.url, self.key = url, key
        self._connection: sqlalchemy.Connection | None = None

    def __enter__(self) -> AdvisoryLock:
        if self._connection is None:
            engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
            self._connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._connection is not None
        self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})


def queue_lock(url: str) -> contextlib.AbstractContextManager:
    """A lock around claiming queued runs and re-queueing stale ones, across all local workers.

    SQLite has no row locks (Optuna's ``SELECT ... FOR UPDATE`` is a plain read there), so two
    workers can both see a stale run RUNNING and both re-queue it, and the run is then done
    twice (seen in a test: two workers relaunched at once re-queued each killed run twice). A file
    lock next to the database serializes those steps; SQLite is single-host anyway. PostgreSQL's
    row locks already serialize them (see :func:`orphans_lock` for the one step they do not), and the
    journal storage has no heartbeats.
    """
    if url.startswith("sqlite:///"):
        return FileLock(url[len("sqlite:///"):] + ".lock")
    return contextlib.nullcontext()


def orphans_lock(url: str) -> contextlib.AbstractContextManager:
    """A lock around re-queueing the runs whose re-queueing worker died (:func:`requeue_stale`), across hosts.

    That step reads every trial, decides and writes, which row locks do not serialize: on PostgreSQL a
    database-wide advisory lock (:class:`AdvisoryLock`) does. It is taken only when such runs may exist,
    so claims do not wait for it. SQLite's steps already hold :func:`queue_lock`.
    """
    if url.startswith("postgresql"):
        return AdvisoryLock(url)
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


def requeue_stale(study: optuna.Study, lock: contextlib.AbstractContextManager | None = None) -> None:
    """Fail the RUNNING trials whose heartbeats stopped and queue them again (Optuna's retry callback); call it
    under :func:`queue_lock`, with the worker's :func:`orphans_lock` as ``lock``.

    Optuna first fails all stale trials, then queues their retries: a worker killed in between leaves
    failed trials that no worker ran to the end and nobody re-queued. Those (claimed by a worker, failed
    without a ``status``, which every told trial has, and in no trial's retry history) are queued here,
    under ``lock``.
    """
    with quiet_experimental():
        fail_stale_trials(study)
        if not _stale_failures(study):  # the common case: no worker died; no lock, no read of every trial
            return
        with lock or contextlib.nullcontext():
            trials = study.get_trials(deepcopy=False)
            retried = {number for t in trials for number in RetryHeartbeatStaleTrialCallback.retry_history(t)}
            for trial in _stale_failures(study):
                if trial.number not in retried:
                    retry_callback()(study, trial)  # within its retry budget, as Optuna would have


def _stale_failures(study: optuna.Study) -> list[FrozenTrial]:
    """Failed trials a worker claimed and never told (no ``status``): failed by Optuna as stale."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if WORKER_ATTR in t.user_attrs and "status" not in t.user_attrs]


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
