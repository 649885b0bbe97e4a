"""Runs as Optuna trials: a run record written into its trial, the one way a trial is told its run's end,
and which trials count as final.

The tables read back out of the trials are in :mod:`dropout_lab.store.run_tables`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from dropout_lab.store.heartbeat import quiet_experimental, retry_callback
from dropout_lab.training.run_record import RunRecord, Status

#: What a trial ended as: its metric (COMPLETE), ``TrialState.PRUNED`` or ``TrialState.FAIL``.
Outcome = float | TrialState


def save_record(trial: optuna.Trial, record: RunRecord, output_dir: str) -> None:
    """Store the whole run record in its trial's user attributes (see ``RunRecord.trial_attrs``)."""
    for key, value in record.trial_attrs(output_dir).items():
        trial.set_user_attr(key, value)


def save_failure(trial: optuna.Trial, reason: str) -> None:
    """Record why a run failed before it produced a record (a bad value or override)."""
    trial.set_user_attr("status", Status.FAILED.value)
    trial.set_user_attr("reason", reason)


def stored_record(attrs: Mapping[str, Any]) -> RunRecord | None:
    """The run record a trial's user attributes hold, or None if its run stopped before it had one."""
    return RunRecord.from_trial_attrs(dict(attrs)) if "config" in attrs and "status" in attrs else None


def outcome(record: RunRecord | None, metric: str) -> Outcome:
    """A run's outcome for its trial: its final ``metric`` when it completed with a finite value, else
    PRUNED or FAIL (no record, failed, interrupted)."""
    if record is not None and record.status is Status.COMPLETED:
        value = record.final.get(metric)
        if value is not None and math.isfinite(value):
            return float(value)
    if record is not None and record.status is Status.PRUNED:
        return TrialState.PRUNED
    return TrialState.FAIL


def tell(study: optuna.Study, trial: optuna.Trial | int, record: RunRecord | None, metric: str) -> None:
    """Finish a RUNNING trial from its run's record: COMPLETE with the metric, PRUNED, or FAIL; an interrupted
    run (Ctrl-C) is failed and queued again, as the heartbeat does for a killed worker."""
    result = outcome(record, metric)
    told = {"values": result} if isinstance(result, float) else {"state": result}
    if record is None or record.status is not Status.INTERRUPTED:
        study.tell(trial, **told, skip_if_finished=True)  # finished already: failed as stale meanwhile
        return
    try:
        frozen = study.tell(trial, **told)
    except ValueError:  # failed as stale meanwhile, and re-queued then: not twice
        return
    with quiet_experimental():
        retry_callback()(study, frozen)


def add_run(study: optuna.Study, record: RunRecord, output_dir: str, params: dict[str, Any],
            distributions: dict[str, BaseDistribution], metric: str) -> None:
    """Store a run trained outside any study worker (``dropout-lab train``) as a finished trial of ``study``."""
    result = outcome(record, metric)
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE if isinstance(result, float) else result,
        value=result if isinstance(result, float) else None,
        params=params, distributions=distributions, user_attrs=record.trial_attrs(output_dir)))


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
