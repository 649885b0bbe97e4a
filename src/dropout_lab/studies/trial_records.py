"""Runs as Optuna trials: what a run writes into its trial, and the tidy tables read back out."""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from dropout_lab.training.run_record import RunRecord

def record_attrs(record: RunRecord, output_dir: str) -> dict[str, Any]:
    """The user attributes that hold a run's results in its trial."""
    attrs = {
        "status": record.status, "reason": record.reason, "curves": record.curves,
        "final": record.final, "config_hash": record.config_hash,
        "wall_time_s": round(record.wall_time_s, 3), "overrides": record.overrides,
        "output_dir": output_dir,
    }
    for optional in ("activations", "test_time"):  # instruments, when enabled
        if getattr(record, optional):
            attrs[optional] = getattr(record, optional)
    return attrs


def save_record(trial: optuna.Trial, record: RunRecord, output_dir: str) -> None:
    """Write a run record's results into its trial's user attributes."""
    for key, value in record_attrs(record, output_dir).items():
        trial.set_user_attr(key, value)


def save_failure(trial: optuna.Trial, reason: str) -> None:
    """Record why a run failed before it produced a record."""
    trial.set_user_attr("status", "failed")
    trial.set_user_attr("reason", reason)


def is_retry_pending(trial: FrozenTrial, trials: list[FrozenTrial]) -> bool:
    """True if a failed trial was re-queued: a later trial lists it in its retry history."""
    return any(trial.number in t.system_attrs.get("retry_history", ()) for t in trials)


def runs_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per finished run: trial number, state, params (seed included), value and final metrics.

    Trials that were re-queued after a crash or interruption are left out: their retry is the run.
    """
    trials = study.get_trials(deepcopy=False)
    rows = []
    for t in trials:
        if t.state in (TrialState.WAITING, TrialState.RUNNING) or (
                t.state == TrialState.FAIL and is_retry_pending(t, trials)):
            continue
        attrs = t.user_attrs
        rows.append({
            "trial": t.number, "state": t.state.name, **t.params, "value": t.value,
            **{k: v for k, v in attrs.get("final", {}).items()},
            "status": attrs.get("status"), "reason": attrs.get("reason"),
            "config_hash": attrs.get("config_hash"), "wall_time_s": attrs.get("wall_time_s"),
            "epochs_run": len(attrs.get("curves", [])),
        })
    return pd.DataFrame(rows)


def curves_frame(study: optuna.Study) -> pd.DataFrame:
    """Long table of per-epoch metrics: one row per (trial, epoch), with the trial's params."""
    runs = runs_frame(study)
    if runs.empty:
        return runs
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    parts = []
    for number in runs["trial"]:
        t = trials[number]
        curves = pd.DataFrame(t.user_attrs.get("curves", []))
        if curves.empty:
            continue
        parts.append(curves.assign(trial=number, **{k: v for k, v in t.params.items()}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def progress_counts(study: optuna.Study, total: int) -> dict[str, int]:
    """Counts for status and progress: done, running, failed (final), waiting, remaining."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    failed = sum(1 for t in trials if t.state == TrialState.FAIL and not is_retry_pending(t, trials))
    done = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
    return {"total": total, "done": done, "running": states.count(TrialState.RUNNING),
            "failed": failed, "waiting": states.count(TrialState.WAITING),
            "remaining": max(total - done - failed, 0)}
