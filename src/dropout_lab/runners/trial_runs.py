"""Training the runs of Optuna trials, on their own networks or in fused populations: every runner's one path.

A runner (grid worker, tuning worker, sweeper job) hands over RUNNING trials with their runs'
overrides (or configs). Each run's config is composed and checked alone first: a bad value fails
its own trial only, with the reason. With a population size K above 1, runs that can share a
population (equal but for seed, rates, learning rate, momentum and weight decay:
``config.engine.group_key``) train together, up to K at a time; a run that needs the per-run engine
(the activation monitor, test-time evaluation, a logger, a network or noise of the user's own:
``config.engine.per_run_reason``) trains on its own network, with a log line saying why.

Every run stays a run of its own, with its own record, stored in its trial and in its ``run.json`` the
moment it ends (a member that diverges or is pruned leaves at once while its mates train on). A trial
holds one run, or one per seed (a tuning trial averaged over seeds, ``runners/worker.py``): its runs
are checked together, kept in one population (up to ``size`` runs: whole trials only), and the trial is
handed to ``finish`` once all of them ended (a worker tells the trial there; a sweeper job leaves that
to its sweeper). With pruning, each trial reports every epoch its running signal (``metric``'s value
so far: the best epoch's for ``best_X``, else the last epoch's), the mean over its runs, and when the
trial is pruned all its runs stop together; a trial whose runs do not all train in the same population
(the per-run engine trains seeds one after another) is not pruned. Ctrl-C stores every unfinished
run's record (``interrupted``) and propagates.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import optuna
from omegaconf import DictConfig

from dropout_lab.config.compose import compose_train_config
from dropout_lab.config.engine import group_key, per_run_reason
from dropout_lab.config.validate import validate_config
from dropout_lab.errors import interrupt_behind
from dropout_lab.store.claims import mark_worker
from dropout_lab.store.trial_records import save_failure, save_record, save_seed_runs, start_seed_runs
from dropout_lab.training.best_weights import value_so_far
from dropout_lab.training.epoch_end import Pruning
from dropout_lab.training.fit import RunSpec, fit_runs, train_population
from dropout_lab.training.population_net import check_population
from dropout_lab.training.run_record import RunRecord

log = logging.getLogger(__name__)

#: Called once per trial when all its runs ended, with their stored records in order (None: the trial failed
#: before all of them had one; the reason is stored in it).
Finish = Callable[[optuna.Trial, list[RunRecord] | None], None]


@dataclass
class TrialRun:
    """One run of a trial: the trial, the run's params (grouping), overrides and folder, and its config."""

    trial: optuna.Trial
    params: dict
    overrides: list[str]
    output_dir: str
    cfg: DictConfig | None = None

    @property
    def spec(self) -> RunSpec:
        assert self.cfg is not None  # composed by _checked
        return RunSpec(self.cfg, self.output_dir, self.overrides)


class _Trials:
    """The runs of each trial, the records of those that ended, and the trials handed to ``finish``."""

    def __init__(self, runs: Sequence[TrialRun], finish: Finish) -> None:
        self.runs: dict[int, list[TrialRun]] = {}
        for run in runs:
            self.runs.setdefault(run.trial.number, []).append(run)
        self.records: dict[int, dict[int, RunRecord]] = {number: {} for number in self.runs}
        self.finish, self.finished = finish, set[int]()
        for mine in self.runs.values():
            if len(mine) > 1:
                start_seed_runs(mine[0].trial, [int(run.params["seed"]) for run in mine])

    def ended(self, run: TrialRun, record: RunRecord) -> None:
        """Store ``run``'s record in its trial; finish the trial when it was its last run."""
        number, mine = run.trial.number, self.runs[run.trial.number]
        done = self.records[number]
        done[mine.index(run)] = record
        if record.reason:
            log.info("trial %d%s ended %s: %s", number, f" (seed {record.seed})" if len(mine) > 1 else "",
                     record.status, record.reason)
        if len(mine) == 1:
            save_record(run.trial, record, run.output_dir)
        else:
            save_seed_runs(run.trial, [(done[i], mine[i].output_dir) for i in sorted(done)], len(mine))
        if len(done) == len(mine) and number not in self.finished:
            self.finished.add(number)
            self.finish(run.trial, [done[i] for i in range(len(mine))])

    def fail(self, run: TrialRun, exc: BaseException) -> None:
        """Fail ``run``'s trial with ``exc`` (its runs that ended keep their records), unless it was finished."""
        if (interrupt := interrupt_behind(exc)) is not None:  # Ctrl-C hidden behind a library's error: stop
            raise interrupt
        if run.trial.number in self.finished:
            return
        self.finished.add(run.trial.number)
        log.error("trial %d failed: %s: %s", run.trial.number, type(exc).__name__, exc)
        save_failure(run.trial, f"{type(exc).__name__}: {exc}")
        self.finish(run.trial, None)


def _checked(run: TrialRun, population: bool) -> str | None:
    """Compose and check the run's config; why it trains per-run (None: it can join a population)."""
    run.cfg = run.cfg if run.cfg is not None else compose_train_config(run.overrides)
    reason = per_run_reason(run.cfg) if population else "population size 1"
    if reason is None:
        check_population([run.cfg])
    else:
        validate_config(run.cfg)
    return reason


def _pruning(batch: Sequence[TrialRun], trials: _Trials, metric: str) -> Pruning:
    """Report each trial whose runs all train in ``batch`` once per epoch (as step epoch - 1): the mean of its
    runs' ``metric`` so far; prune all of them when the trial says so. A trial with a run gone (diverged) or
    without the value is not reported: it fails, or has nothing to compare."""
    positions: dict[int, list[int]] = {}
    for position, run in enumerate(batch):
        positions.setdefault(run.trial.number, []).append(position)
    whole = {number: mine for number, mine in positions.items() if len(mine) == len(trials.runs[number])}

    def prune(training: Mapping[int, RunRecord], may_prune: bool) -> list[int]:
        pruned: list[int] = []
        for mine in whole.values():
            if not all(p in training for p in mine):
                continue
            records = [training[p] for p in mine]
            values = [value_so_far(r.curves, metric, str(r.config.get("metric", "val_acc"))) for r in records]
            if not all(v is not None and math.isfinite(v) for v in values):
                continue
            trial = batch[mine[0]].trial
            trial.report(statistics.fmean(v for v in values if v is not None),
                         step=int(records[0].curves[-1]["epoch"]) - 1)
            if may_prune and trial.should_prune():
                pruned += mine
        return pruned

    return prune


def train_trials(runs: Sequence[TrialRun], *, size: int, precision: str, metric: str, pruning: bool,
                 finish: Finish) -> None:
    """Train ``runs`` (see the module docstring): per-run when ``size`` is 1, else in populations of up to
    ``size`` runs (whole trials) in ``precision``; each trial's ``metric`` is reported for pruning when
    ``pruning``."""
    trials = _Trials(runs, finish)
    groups: dict[tuple, list[list[TrialRun]]] = {}
    alone: list[TrialRun] = []
    for mine in trials.runs.values():
        mark_worker(mine[0].trial)
        try:
            reasons = [_checked(run, population=size > 1) for run in mine]
        except Exception as exc:  # a bad value or override: this trial fails, the others go on
            trials.fail(mine[0], exc)
            continue
        reason = next((r for r in reasons if r is not None), None)
        if reason is None and len(mine) > size:
            reason = f"its {len(mine)} runs do not fit in a population of {size}"
        if reason is None:
            groups.setdefault(group_key(mine[0].params), []).append(mine)
            continue
        if size > 1 or len(mine) > 1:
            log.warning("trial %d trains per-run%s: %s", mine[0].trial.number,
                        ", its seeds one after another, not pruned" if len(mine) > 1 else "", reason)
        alone += mine
    batches: list[tuple[bool, list[TrialRun]]] = [(False, [run]) for run in alone]
    for group in groups.values():
        batch: list[TrialRun] = []
        for mine in group:
            if len(batch) + len(mine) > size:
                batches.append((True, batch))
                batch = []
            batch += mine
        batches.append((True, batch))
    for population, batch in batches:
        _train(batch, trials, population=population, precision=precision,
               prune=_pruning(batch, trials, metric) if pruning else None)


def _train(batch: list[TrialRun], trials: _Trials, *, population: bool, precision: str,
           prune: Pruning | None) -> None:
    """Train one run alone or a population; store each record in its trial as it ends."""
    left: set[int] = set()

    def on_finish(number: int, record: RunRecord) -> None:
        left.add(number)
        trials.ended(batch[number], record)

    specs = [run.spec for run in batch]
    try:
        if population:
            log.info("pid %d: training trials %s as one population (%d members, %s)", os.getpid(),
                     sorted({run.trial.number for run in batch}), len(batch), precision)
            train_population(specs, precision, prune=prune, on_finish=on_finish)
        else:
            fit_runs(specs, population=False, prune=prune, on_finish=on_finish)
    except Exception as exc:  # refused before training (the runs cannot train together, a bad folder or target)
        for number, run in enumerate(batch):
            if number not in left:
                trials.fail(run, exc)
