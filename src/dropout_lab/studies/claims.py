"""What both engines of a study worker share: its settings, claiming queued trials, and a trial's run folder.

The per-run engine (``studies/worker.py``) claims one queued trial at a time; the population engine
(``studies/populations.py``) claims up to K compatible ones at once, each exactly as the per-run
engine claims its one.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from dropout_lab.studies.grid import run_overrides
from dropout_lab.studies.spec import StudySpec
from dropout_lab.studies.storage import heartbeat_interval, quiet_experimental, retry_callback

#: User attribute naming the worker process (host, pid) that runs or ran a trial.
WORKER_ATTR = "worker"


@dataclass
class WorkerSettings:
    """Where a worker stores and writes, what it adds to every run's overrides, and how it trains.

    ``population``: ``1`` trains one run at a time (the per-run engine); K > 1 or ``"auto"`` trains up
    to K compatible runs as one fused population (``studies/populations.py``), in ``population_precision``
    (``fp32`` or ``bf16``). ``workers``: how many workers share the study on this host (``auto``
    splits the free memory and the queue between them).
    """

    storage_url: str
    results_dir: str
    extra_overrides: list[str] = field(default_factory=list)
    heartbeat_interval: int | None = 30
    poll_s: float = 2.0
    worker_index: int = 0
    population: int | str = 1
    population_precision: str = "fp32"
    workers: int = 1


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


def trial_overrides(spec: StudySpec, settings: WorkerSettings, params: Mapping[str, Any]) -> list[str]:
    """The Hydra overrides of the run of a trial with ``params``."""
    return run_overrides(spec, params) + [f"results_dir={settings.results_dir}", *settings.extra_overrides]


def trial_output_dir(spec: StudySpec, settings: WorkerSettings, trial: optuna.Trial) -> str:
    """The folder of a trial's ``run.json`` copy."""
    return str(Path(settings.results_dir) / "studies" / spec.name / f"trial_{trial.number:05d}")
