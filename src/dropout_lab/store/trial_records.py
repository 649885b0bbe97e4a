"""Runs as Optuna trials: run records written into their trial, the one way a trial is told its runs' end,
and which trials count as final.

A trial holds one run (a grid cell, a one-seed tuning trial, a sweeper job): its record's fields are
the trial's own user attributes. A trial of a tuning study with several seeds holds one run per seed,
trained together: ``seeds`` lists them and ``runs`` holds each ended run's record attributes (with its
``output_dir``), in seed order; once all ended, ``status`` and ``reason`` say how the trial ended
(:func:`trial_status`). :func:`seed_runs` reads either shape. The tables read back out of the trials
are in :mod:`dropout_lab.store.run_tables`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from dropout_lab.store.heartbeat import quiet_experimental, retry_callback
from dropout_lab.training.run_record import RunRecord, Status

#: What a trial ended as: its metric (COMPLETE), ``TrialState.PRUNED`` or ``TrialState.FAIL``.
Outcome = float | TrialState
#: User attributes of a trial of several seed runs: the seeds, and each ended run's record attributes.
SEEDS_ATTR, RUNS_ATTR = "seeds", "runs"


def save_record(trial: optuna.Trial, record: RunRecord, output_dir: str) -> None:
    """Store the whole run record in its trial's user attributes (see ``RunRecord.trial_attrs``)."""
    for key, value in record.trial_attrs(output_dir).items():
        trial.set_user_attr(key, value)


def start_seed_runs(trial: optuna.Trial, seeds: Sequence[int]) -> None:
    """Mark ``trial`` as holding one run per seed of ``seeds`` (none ended yet; a retried trial's old runs go)."""
    trial.set_user_attr(SEEDS_ATTR, list(seeds))
    trial.set_user_attr(RUNS_ATTR, [])


def save_seed_runs(trial: optuna.Trial, ended: Sequence[tuple[RunRecord, str]], seeds: int) -> None:
    """Store the records (with their ``output_dir``) of the seed runs of ``trial`` that ended so far, in seed
    order; when all ``seeds`` ended, the trial's ``status`` and ``reason`` too (:func:`trial_status`)."""
    trial.set_user_attr(RUNS_ATTR, [record.trial_attrs(output_dir) for record, output_dir in ended])
    if len(ended) == seeds:
        status, reason = trial_status([record for record, _ in ended])
        trial.set_user_attr("status", status.value)
        trial.set_user_attr("reason", reason)


def trial_status(records: Sequence[RunRecord]) -> tuple[Status, str | None]:
    """How a trial of these runs ended, and why: interrupted or failed if any run was (a failed seed fails the
    trial: its objective is never a mean over the other seeds), else pruned if they were, else completed."""
    for status in (Status.INTERRUPTED, Status.FAILED, Status.PRUNED):
        hit = next((r for r in records if r.status is status), None)
        if hit is not None:
            if len(records) == 1 or status is Status.PRUNED:
                return status, hit.reason
            return status, (f"seed {hit.seed} {status.value}: {hit.reason}; the trial's objective is not a mean over "
                            f"its other seeds")
    return Status.COMPLETED, None


def seed_runs(attrs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The record attributes of each run a trial holds (see the module docstring); the trial's own attributes
    when it holds one run, or none ended yet (a failure before training is recorded there)."""
    runs = attrs.get(RUNS_ATTR)
    return list(runs) if runs else [attrs]


def save_failure(trial: optuna.Trial, reason: str) -> None:
    """Record why a run failed before it produced a record (a bad value or override)."""
    trial.set_user_attr("status", Status.FAILED.value)
    trial.set_user_attr("reason", reason)


def stored_records(attrs: Mapping[str, Any]) -> list[RunRecord] | None:
    """The run records a trial's user attributes hold, or None if a run stopped before it had one (or not all
    of a trial's seed runs ended)."""
    if RUNS_ATTR in attrs:
        records = [RunRecord.from_trial_attrs(dict(run)) for run in attrs[RUNS_ATTR]]
        return records if records and len(records) == len(attrs.get(SEEDS_ATTR) or records) else None
    return [RunRecord.from_trial_attrs(dict(attrs))] if "config" in attrs and "status" in attrs else None


def outcome(records: Sequence[RunRecord] | None, metric: str) -> Outcome:
    """A trial's outcome from its runs' records: the mean of their ``metric`` (a run-table column: ``val_acc``,
    ``best_val_acc``, ``RunRecord.value``) when all completed with finite values; else PRUNED if they were
    pruned, else FAIL (no records, a run failed or was interrupted). A failed seed fails the trial: the mean
    is never taken over the surviving seeds."""
    if not records:
        return TrialState.FAIL
    status, _ = trial_status(records)
    if status is Status.COMPLETED:
        values = [record.value(metric) for record in records]
        if all(v is not None and math.isfinite(v) for v in values):
            return statistics.fmean(v for v in values if v is not None)
    return TrialState.PRUNED if status is Status.PRUNED else TrialState.FAIL


def tell(study: optuna.Study, trial: optuna.Trial | int, records: Sequence[RunRecord] | None, metric: str) -> None:
    """Finish a RUNNING trial from its runs' records (:func:`outcome`): COMPLETE with the mean metric, PRUNED, or
    FAIL; a trial with an interrupted run (Ctrl-C) is failed and queued again, as the heartbeat does for a killed
    worker."""
    result = outcome(records, metric)
    told = {"values": result} if isinstance(result, float) else {"state": result}
    if not records or not any(record.status is Status.INTERRUPTED for record in records):
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
    result = outcome([record], metric)
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
