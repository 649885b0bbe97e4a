"""Runs as Optuna trials: writing a run record into its trial, and which trials count as final.

The tables read back out of the trials are in :mod:`dropout_lab.store.run_tables`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from dropout_lab.store.backends import quiet_experimental

if TYPE_CHECKING:  # the record is only passed through: no training package at import time
    from dropout_lab.training.run_record import RunRecord


def save_record(trial: optuna.Trial, record: RunRecord, output_dir: str) -> None:
    """Store the whole run record in its trial's user attributes (see ``RunRecord.trial_attrs``)."""
    for key, value in record.trial_attrs(output_dir).items():
        trial.set_user_attr(key, value)


def save_failure(trial: optuna.Trial, reason: str) -> None:
    """Record why a run failed before it produced a record."""
    trial.set_user_attr("status", "failed")
    trial.set_user_attr("reason", reason)


def retry_history(trial: FrozenTrial) -> list[int]:
    """The numbers of the earlier attempts of ``trial`` (failed when their worker died, then re-queued)."""
    with quiet_experimental():
        return RetryHeartbeatStaleTrialCallback.retry_history(trial)


def is_retry_pending(trial: FrozenTrial, trials: list[FrozenTrial]) -> bool:
    """True if a failed trial was re-queued: a later trial lists it in its retry history."""
    return any(trial.number in retry_history(t) for t in trials)


def final_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Finished trials that stand as runs: not waiting or running, and not failed runs that were re-queued."""
    return [t for t in trials if t.state not in (TrialState.WAITING, TrialState.RUNNING)
            and not (t.state == TrialState.FAIL and is_retry_pending(t, trials))]


def progress_counts(study: optuna.Study, total: int) -> dict[str, int]:
    """Counts for status and progress: done, running, failed (final), waiting, remaining."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    failed = sum(1 for t in trials if t.state == TrialState.FAIL and not is_retry_pending(t, trials))
    done = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
    return {"total": total, "done": done, "running": states.count(TrialState.RUNNING),
            "failed": failed, "waiting": states.count(TrialState.WAITING),
            "remaining": max(total - done - failed, 0)}
