"""A grid study's worker: claim queued runs, one at a time or a population at a time, train them, tell them.

Any number of workers, on any number of hosts, can share one storage. Each queued run is claimed
atomically by moving its trial from WAITING to RUNNING, the way Optuna pops its own queue, so no run
is done twice (on SQLite under a file lock, see ``store.claims.queue_lock``). A worker killed with
SIGKILL stops beating; the first worker (or relaunch) that notices re-queues its runs once (Optuna's
``RetryHeartbeatStaleTrialCallback``). Ctrl-C stores the current runs as interrupted and re-queues them.

With a population size K above 1 (or ``auto``), a claim takes up to K queued cells that can share a
population (``config.engine.group_key``), at most this worker's share of what is left of their group,
``ceil((queued cells of the group + running runs) / workers)``, so that the last populations are
split between the workers instead of left to one.

A worker exits when the queue is empty and nothing that may still fail is running, unless the study's
runner holds the queue open (``store/queue_lease.py``): then it waits for the runner's next look.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from dropout_lab.config.compose import compose_train_config
from dropout_lab.config.engine import group_key, per_run_reason
from dropout_lab.config.study_spec import StudySpec
from dropout_lab.runners.session import TrialSession
from dropout_lab.runners.settings import WorkerSettings, population_size, trial_output_dir, trial_overrides
from dropout_lab.runners.trial_runs import TrialRun, train_trials
from dropout_lab.store.claims import claim_waiting, orphans_lock, queue_lock, requeue_stale, suggest_fixed
from dropout_lab.store.heartbeat import heartbeat_interval
from dropout_lab.store.queue_lease import queue_open
from dropout_lab.store.study_setup import CELL_ATTR, CELL_CHOICES

log = logging.getLogger(__name__)


def cell_of(trial: FrozenTrial) -> dict[str, Any]:
    """A queued trial's grid cell (override values and seed)."""
    return dict(trial.user_attrs.get(CELL_ATTR, trial.params))


class GridQueue:
    """A grid study's queue as one worker claims from it; ``size_of(cell)`` is K for the cell's group (1: per-run)."""

    def __init__(self, study: optuna.Study, storage: BaseStorage, lock: contextlib.AbstractContextManager,
                 size_of: Callable[[dict[str, Any]], int] = lambda cell: 1, workers: int = 1,
                 orphans: contextlib.AbstractContextManager | None = None) -> None:
        self.study, self.storage, self.lock, self.orphans = study, storage, lock, orphans
        self.size_of, self.workers = size_of, workers

    def claim(self) -> tuple[list[int], int]:
        """Re-queue stale runs, then claim the next run or population: (trial ids, K of their group).

        The group is that of the oldest queued cell; the claim takes at most K of its cells and at most
        this worker's share of what is left (see the module docstring).
        """
        with self.lock:
            requeue_stale(self.study, self.orphans)
            waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if not waiting:
                return [], 1
            key = group_key(cell_of(waiting[0]))
            size = self.size_of(cell_of(waiting[0]))
            same = [t for t in waiting if group_key(cell_of(t)) == key]
            running = len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            share = math.ceil((len(same) + running) / max(self.workers, 1))
            return claim_waiting(self.study, self.storage, same, limit=min(size, max(1, share))), size


def group_sizes(spec: StudySpec, settings: WorkerSettings) -> Callable[[dict[str, Any]], int]:
    """K for each group of cells (decided once per group, from the composed config of its first cell)."""
    sizes: dict[tuple, int] = {}

    def size_of(cell: dict[str, Any]) -> int:
        key = group_key(cell)
        if key not in sizes:
            if settings.population == 1:
                sizes[key] = 1
                return 1
            try:
                cfg = compose_train_config(trial_overrides(spec, settings, cell))
            except Exception:  # a bad override: each run records the error in its trial
                sizes[key] = 1
                return 1
            reason = per_run_reason(cfg)
            sizes[key] = 1 if reason is not None else population_size(settings, cfg)
            if reason is not None:
                log.warning("study %s: runs like %s use the per-run engine: %s", spec.name, dict(key), reason)
            else:
                log.info("study %s: runs like %s train in populations of up to %d (%s)", spec.name, dict(key),
                         sizes[key], settings.population_precision)
        return sizes[key]

    return size_of


def run_grid(study: optuna.Study, storage: BaseStorage, spec: StudySpec, settings: WorkerSettings) -> int:
    """Work through the queue until it is empty; with heartbeats, wait for running trials that may still fail, and
    while the queue is held open, for more runs. Returns how many runs this worker trained."""
    done = 0
    queue = GridQueue(study, storage, queue_lock(settings.storage_url), group_sizes(spec, settings), settings.workers,
                      orphans_lock(settings.storage_url))
    with TrialSession(study, storage, spec.metric) as session:
        while True:
            trial_ids, size = queue.claim()
            if trial_ids:
                choices = study.user_attrs.get(CELL_CHOICES, {})  # read per claim: a later look may add values
                runs = []
                for trial_id in trial_ids:
                    trial = session.hold(trial_id)
                    suggest_fixed(trial, storage.get_trial(trial_id).user_attrs[CELL_ATTR], choices)
                    params = dict(trial.params)
                    runs.append(TrialRun(trial, params, trial_overrides(spec, settings, params),
                                         trial_output_dir(spec, settings, trial)))
                train_trials(runs, size=size, precision=settings.population_precision, metric=spec.metric,
                             pruning=False, finish=session.tell)
                done += len(runs)
                continue
            running = heartbeat_interval(storage) and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if running or queue_open(study):
                time.sleep(settings.poll_s)
                continue
            return done
