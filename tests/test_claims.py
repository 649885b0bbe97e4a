"""Re-queueing runs whose worker died: a retry Optuna never queued (its worker died too) is queued once."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from dropout_lab.store.backends import open_storage
from dropout_lab.store.claims import WORKER_ATTR, claim_waiting, orphans_lock, queue_lock, requeue_stale
from dropout_lab.store.heartbeat import quiet_experimental

WORKERS = 3


def _requeue(url: str, name: str, start: multiprocessing.synchronize.Barrier) -> None:
    """One worker's queue step, as a grid claim or a tuning ask takes it: under the queue lock."""
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    lock, orphans = queue_lock(url), orphans_lock(url)
    start.wait(timeout=60)
    with lock:
        requeue_stale(study, orphans)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_stale_failed_runs_whose_retry_was_never_queued_are_queued_once(backend: str, tmp_path: Path,
                                                                      request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    name = f"orphans-{uuid.uuid4().hex[:8]}"
    storage = open_storage(url)
    study = optuna.create_study(study_name=name, storage=storage)
    for x in range(4):
        study.enqueue_trial({"x": x})
    claimed = claim_waiting(study, storage, study.get_trials(states=(TrialState.WAITING,)))
    assert len(claimed) == 4
    for trial_id in claimed:
        storage.set_trial_user_attr(trial_id, WORKER_ATTR, {"host": "h", "pid": 1})
    told, retried, *orphans = claimed
    storage.set_trial_user_attr(told, "status", "failed")  # a run that failed and was told so: not re-queued
    storage.set_trial_state_values(told, TrialState.FAIL)
    # Trial `retried` went stale and was failed and re-queued by Optuna; the two `orphans` were failed as stale
    # by a worker that was killed before it queued their retries (what fail_stale_trials does in two steps).
    for trial_id in (retried, *orphans):
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    with quiet_experimental():
        RetryHeartbeatStaleTrialCallback(max_retry=3)(study, study.get_trials()[1])

    context = multiprocessing.get_context("fork")
    start = context.Barrier(WORKERS)
    workers = [context.Process(target=_requeue, args=(url, name, start)) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * WORKERS

    waiting = study.get_trials(states=(TrialState.WAITING,))
    with quiet_experimental():
        sources = sorted(RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in waiting)
    numbers = {t._trial_id: t.number for t in study.get_trials()}
    assert sources == sorted(numbers[i] for i in (retried, *orphans)), sources  # each once; `told` never
