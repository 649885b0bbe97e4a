"""The population engine of a study worker: compatible runs packed K at a time into one fused population.

``study run NAME --population K|auto`` (worker setting ``population``) makes each worker

* **grid**: claim up to K queued cells at once that can share a population (equal in everything
  but seed, dropout rates, learning rate, momentum and weight decay: :func:`group_key`), under the
  same queue lock and with the same heartbeat-before-claim as the per-run engine;
* **tuning**: ask the tuning core for K trials at once (``Tuner.run(evaluate, batch=K)``), and prune
  each member through its own trial (``trial.report`` / ``trial.should_prune`` after every epoch);

then train them with :func:`~dropout_lab.training.population.fit_population`. Every member stays a
run of its own: its own trial, beating until told; its own complete run record (``engine`` says
``population(K=8, fp32)``) in the trial and in ``trial_NNNNN/run.json``; a member that diverges or is
pruned is stored and told at once and leaves the population while its mates go on. A SIGKILL
stops the beats of all members, so each goes stale and is re-queued once, as a per-run trial is.

A run that needs the activation monitor, test-time evaluation, a logger, or a network or noise of
the user's own is trained per-run instead (``config.population.per_run_reason``), with a log line
saying why; its record's ``engine`` is ``per-run``.

``auto`` picks K per group from the device and a memory budget (``auto_population_size``), and a
claim takes at most ``ceil((queued cells of the group + running runs) / workers)`` cells, so the
workers of one host share the end of the queue evenly.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.storages import BaseStorage, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from dropout_lab.config.compose import compose_train_config
from dropout_lab.config.engine import AUTO, group_key, per_run_reason
from dropout_lab.config.study_spec import StudySpec
from dropout_lab.runners import settings as run_settings
from dropout_lab.runners.pruning import may_prune
from dropout_lab.runners.settings import WorkerSettings
from dropout_lab.runners.tuner import Outcome, outcome_of
from dropout_lab.store import claims
from dropout_lab.store.backends import Heartbeat, quiet_experimental
from dropout_lab.store.study_setup import CELL_ATTR, CELL_CHOICES
from dropout_lab.store.trial_records import save_failure, save_record
from dropout_lab.training.population import (
    PruneMembers,
    auto_population_size,
    build_population,
    check_population,
    fit_population,
)
from dropout_lab.training.run_record import RunRecord
from dropout_lab.training.train import prepare_output_dir

log = logging.getLogger(__name__)

#: Trains one trial per-run and returns its outcome (the per-run engine's, passed in by ``worker.py``).
PerRun = Callable[[optuna.Trial, dict], Outcome]
#: Tells a trial its outcome (and stops its heartbeat).
Tell = Callable[[optuna.Trial, Outcome], None]


def population_size(settings: WorkerSettings, cfg: DictConfig) -> int:
    """K for runs like ``cfg``: the setting, or for ``auto`` the device and memory rule."""
    if settings.population == AUTO:
        return auto_population_size(cfg, settings.workers)
    return int(settings.population)


@dataclass
class MemberTrial:
    """One trial trained as a member: its params, the overrides and folder of its run, its config."""

    trial: optuna.Trial
    params: dict[str, Any]
    overrides: list[str]
    output_dir: str
    cfg: DictConfig | None = None
    stored: bool = False

    def store(self, result: Mapping[str, Any]) -> None:
        """Write the member's complete run record to ``run.json`` and into its trial."""
        record = RunRecord(**{**result, "overrides": self.overrides})
        prepare_output_dir(self.output_dir)
        record.write(self.output_dir)
        save_record(self.trial, record, self.output_dir)
        self.stored = True


def train_group(group: list[MemberTrial], metric: str, precision: str, tell: Tell,
                pruning: bool) -> dict[int, Outcome]:
    """Train one population of compatible members; store each record; tell early leavers at once.

    ``metric`` is the value told and reported for pruning; ``precision`` is ``fp32`` or ``bf16``.
    Returns the outcome of every member by trial number.
    """
    cfgs = [m.cfg for m in group]
    assert all(cfg is not None for cfg in cfgs)
    outcomes: dict[int, Outcome] = {}
    try:
        datamodule, module = build_population(cfgs)  # type: ignore[arg-type]
    except Exception as exc:  # configs that cannot share a population after all: each run fails with the reason
        log.error("trials %s cannot train together: %s: %s", [m.trial.number for m in group], type(exc).__name__, exc)
        for mt in group:
            save_failure(mt.trial, f"{type(exc).__name__}: {exc}")
            outcomes[mt.trial.number] = TrialState.FAIL
        return outcomes

    def on_leave(number: int, member: RunRecord) -> None:  # diverged or pruned: stored and told now
        mt = group[number]
        mt.store(asdict(member))
        outcomes[mt.trial.number] = outcome_of(asdict(member), metric)
        log.info("trial %d left the population: %s", mt.trial.number, member.reason)
        tell(mt.trial, outcomes[mt.trial.number])

    def should_prune(number: int, member: RunRecord) -> bool:
        trial, last = group[number].trial, member.curves[-1]
        trial.report(float(last[metric]), step=int(last["epoch"]) - 1)  # the step the per-run callback reports
        return may_prune(int(last["epoch"]), member.config["trainer"]["max_epochs"]) and trial.should_prune()

    module.on_leave = on_leave
    callbacks = [PruneMembers(should_prune)] if pruning else []
    log.info("pid %d: training trials %s as one population (%d members, %s)", os.getpid(),
             [m.trial.number for m in group], len(group), precision)
    try:
        results = fit_population(cfgs[0], datamodule, module, callbacks,  # type: ignore[arg-type]
                                 precision=precision)
    except (KeyboardInterrupt, SystemExit):
        for mt, result in zip(group, module.results(), strict=True):
            if not mt.stored:
                mt.store(result)  # failed, with the interruption as reason; the caller re-queues the trial
        raise
    except Exception as exc:
        log.error("population of trials %s failed: %s: %s", [m.trial.number for m in group], type(exc).__name__, exc)
        results = module.results()
    for mt, result in zip(group, results, strict=True):
        if not mt.stored:
            mt.store(result)
            outcomes[mt.trial.number] = outcome_of(result, metric)
    return outcomes


def train_trials(trials: Sequence[optuna.Trial], params: Sequence[dict], spec: StudySpec, settings: WorkerSettings,
                 *, tell: Tell, per_run: PerRun, pruning: bool) -> list[Outcome]:
    """Train RUNNING, beating ``trials`` (run ``params`` each) in populations; their outcomes, in order.

    Each run's config is composed and checked alone first: a bad value fails its own trial only
    (with the reason, as per-run), and a run that needs the per-run engine is trained per-run. The
    others are trained in one population per :func:`group_key`. A member that leaves early is told
    through ``tell`` at once; the caller tells the rest. Ctrl-C stores every unfinished member's
    record (failed, with the reason) and propagates.
    """
    members = []
    for trial, p in zip(trials, params, strict=True):
        claims.mark_worker(trial)
        members.append(MemberTrial(trial, dict(p), run_settings.trial_overrides(spec, settings, p),
                                   run_settings.trial_output_dir(spec, settings, trial)))
    outcomes: dict[int, Outcome] = {}
    groups: dict[tuple, list[MemberTrial]] = {}
    for mt in members:
        try:
            mt.cfg = compose_train_config(mt.overrides)
            reason = per_run_reason(mt.cfg)
            if reason is None:
                check_population([mt.cfg])
        except Exception as exc:  # a bad value or override: this run fails, as it would per-run
            log.error("trial %d failed: %s: %s", mt.trial.number, type(exc).__name__, exc)
            save_failure(mt.trial, f"{type(exc).__name__}: {exc}")
            outcomes[mt.trial.number] = TrialState.FAIL
            continue
        if reason is not None:
            log.warning("trial %d trains per-run: %s", mt.trial.number, reason)
            outcomes[mt.trial.number] = per_run(mt.trial, mt.params)
            continue
        groups.setdefault(group_key(mt.params), []).append(mt)
    for group in groups.values():
        outcomes.update(train_group(group, spec.metric, settings.population_precision, tell, pruning))
    return [outcomes[t.number] for t in trials]


# ---------------------------------------------------------------------------------------------
# Grid studies: claim K compatible queued cells at once
# ---------------------------------------------------------------------------------------------

def _cell(trial: FrozenTrial) -> dict[str, Any]:
    return dict(trial.user_attrs.get(CELL_ATTR, trial.params))


class GridPacker:
    """Claims a grid study's queued cells a population at a time (see the module docstring).

    The engine and K of each group of compatible cells are decided once per worker, from the
    composed config of its first cell.
    """

    def __init__(self, study: optuna.Study, storage: BaseStorage, spec: StudySpec, settings: WorkerSettings) -> None:
        self.study, self.storage, self.spec, self.settings = study, storage, spec, settings
        self.sizes: dict[tuple, int] = {}  # group key -> K (1: per-run)

    def _size(self, key: tuple, cell: dict[str, Any]) -> int:
        if key not in self.sizes:
            try:
                cfg = compose_train_config(run_settings.trial_overrides(self.spec, self.settings, cell))
            except Exception:  # a bad override: the per-run engine records the error in each trial
                self.sizes[key] = 1
                return 1
            reason = per_run_reason(cfg)
            if reason is not None:
                log.warning("study %s: runs like %s use the per-run engine: %s", self.spec.name, dict(key), reason)
            self.sizes[key] = 1 if reason is not None else population_size(self.settings, cfg)
            if reason is None:
                log.info("study %s: runs like %s train in populations of up to %d (%s)", self.spec.name, dict(key),
                         self.sizes[key], self.settings.population_precision)
        return self.sizes[key]

    def claim(self, lock: Any) -> tuple[list[int], bool]:
        """Re-queue stale runs, then claim the next population: (trial ids, whether it is a population).

        The group is that of the oldest queued cell; the claim takes at most K of its cells, and at
        most this worker's share of what is left, ``ceil((queued cells of the group + running runs) / workers)``,
        so that the last populations are split between the workers instead of left to one.
        """
        with lock, quiet_experimental():
            fail_stale_trials(self.study)
            waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if not waiting:
                return [], False
            key = group_key(_cell(waiting[0]))
            size = self._size(key, _cell(waiting[0]))
            same = [t for t in waiting if group_key(_cell(t)) == key]
            running = len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            share = math.ceil((len(same) + running) / max(self.settings.workers, 1))  # this worker's fair share
            limit = min(size, max(1, share))
            return claims.claim_waiting(self.study, self.storage, same, limit=limit), size > 1


def _tell_grid(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> None:
    if outcome is not None and not isinstance(outcome, TrialState) and math.isfinite(outcome):
        study.tell(trial, outcome)
    else:
        study.tell(trial, state=TrialState.PRUNED if outcome == TrialState.PRUNED else TrialState.FAIL)


def run_grid_population(study: optuna.Study, storage: BaseStorage, trial_ids: Sequence[int], spec: StudySpec,
                        settings: WorkerSettings, per_run: PerRun) -> None:
    """Train claimed grid trials as one population, each beating until told; Ctrl-C re-queues the unfinished."""
    trials = [optuna.Trial(study, trial_id) for trial_id in trial_ids]
    choices = study.user_attrs.get(CELL_CHOICES, {})
    told: set[int] = set()
    ids = {trial.number: trial_id for trial, trial_id in zip(trials, trial_ids, strict=True)}
    with Heartbeat(storage) as heartbeat:
        for trial_id in trial_ids:
            heartbeat.add(trial_id)

        def tell(trial: optuna.Trial, outcome: Outcome) -> None:
            _tell_grid(study, trial, outcome)
            heartbeat.discard(ids[trial.number])
            told.add(trial.number)

        try:
            for trial, trial_id in zip(trials, trial_ids, strict=True):
                claims.suggest_fixed(trial, storage.get_trial(trial_id).user_attrs[CELL_ATTR], choices)
            outcomes = train_trials(trials, [dict(t.params) for t in trials], spec, settings, tell=tell,
                                    per_run=per_run, pruning=False)
        except (KeyboardInterrupt, SystemExit):
            for trial in trials:
                if trial.number not in told:
                    claims.requeue_interrupted(study, trial)
            raise
        for trial, outcome in zip(trials, outcomes, strict=True):
            if trial.number not in told:
                tell(trial, outcome)
