"""Training the runs of Optuna trials, on their own networks or in fused populations: every runner's one path.

A runner (grid worker, tuning worker, sweeper job) hands over RUNNING trials with their runs'
overrides (or configs). Each run's config is composed and checked alone first: a bad value fails
its own trial only, with the reason. With a population size K above 1, runs that can share a
population (equal but for seed, rates, learning rate, momentum and weight decay:
``config.engine.group_key``) train together, up to K at a time; a run that needs the per-run engine
(the activation monitor, test-time evaluation, a logger, a network or noise of the user's own:
``config.engine.per_run_reason``) trains on its own network, with a log line saying why.

Every run stays a run of its own: its own trial, beating until told; its record stored in the trial
and in its ``run.json`` the moment it ends (a member that diverges or is pruned leaves at once while
its mates train on), then handed to ``finish`` (a worker tells the trial there; a sweeper job leaves
that to its sweeper). With pruning, each member reports every epoch to its own trial and is pruned
through it. Ctrl-C stores every unfinished run's record (``interrupted``) and propagates.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
from omegaconf import DictConfig

from dropout_lab.config.compose import compose_train_config
from dropout_lab.config.engine import group_key, per_run_reason
from dropout_lab.config.validate import validate_config
from dropout_lab.errors import interrupt_behind
from dropout_lab.store.claims import mark_worker
from dropout_lab.store.trial_records import save_failure, save_record
from dropout_lab.training.epoch_end import Pruning
from dropout_lab.training.fit import RunSpec, fit_runs, train_population
from dropout_lab.training.population_net import check_population
from dropout_lab.training.run_record import RunRecord

log = logging.getLogger(__name__)

#: Called once per trial when its run ends, with its stored record (None: it failed before training).
Finish = Callable[[optuna.Trial, RunRecord | None], None]


@dataclass
class TrialRun:
    """One trial's run: the trial, its params (grouping), the overrides and folder of its run, its config."""

    trial: optuna.Trial
    params: dict
    overrides: list[str]
    output_dir: str
    cfg: DictConfig | None = None

    @property
    def spec(self) -> RunSpec:
        assert self.cfg is not None  # composed by _checked
        return RunSpec(self.cfg, self.output_dir, self.overrides)


def _fail(run: TrialRun, exc: BaseException, finish: Finish) -> None:
    if (interrupt := interrupt_behind(exc)) is not None:  # Ctrl-C hidden behind a library's error: stop
        raise interrupt
    log.error("trial %d failed: %s: %s", run.trial.number, type(exc).__name__, exc)
    save_failure(run.trial, f"{type(exc).__name__}: {exc}")
    finish(run.trial, None)


def _checked(run: TrialRun, population: bool) -> str | None:
    """Compose and check the run's config; why it trains per-run (None: it can join a population)."""
    run.cfg = run.cfg if run.cfg is not None else compose_train_config(run.overrides)
    reason = per_run_reason(run.cfg) if population else "population size 1"
    if reason is None:
        check_population([run.cfg])
    else:
        validate_config(run.cfg)
    return reason


def _pruning(group: Sequence[TrialRun], metric: str) -> Pruning:
    """Report each member's last epoch to its own trial (as step epoch - 1); prune it when the trial says so."""
    def prune(number: int, record: RunRecord, may_prune: bool) -> bool:
        trial, last = group[number].trial, record.curves[-1]
        if metric not in last:
            return False
        trial.report(float(last[metric]), step=int(last["epoch"]) - 1)
        return may_prune and trial.should_prune()

    return prune


def train_trials(runs: Sequence[TrialRun], *, size: int, precision: str, metric: str, pruning: bool,
                 finish: Finish) -> None:
    """Train the runs of ``runs`` (see the module docstring): per-run when ``size`` is 1, else in populations
    of up to ``size`` in ``precision``; ``metric`` is reported for pruning when ``pruning``."""
    groups: dict[tuple, list[TrialRun]] = {}
    alone: list[TrialRun] = []
    for run in runs:
        mark_worker(run.trial)
        try:
            reason = _checked(run, population=size > 1)
        except Exception as exc:  # a bad value or override: this run fails, the others go on
            _fail(run, exc, finish)
            continue
        if reason is None:
            groups.setdefault(group_key(run.params), []).append(run)
            continue
        if size > 1:
            log.warning("trial %d trains per-run: %s", run.trial.number, reason)
        alone.append(run)
    batches = [(False, [run]) for run in alone] + [(True, group[i:i + size]) for group in groups.values()
                                                   for i in range(0, len(group), size)]
    for population, batch in batches:
        _train(batch, population=population, precision=precision, finish=finish,
               prune=_pruning(batch, metric) if pruning else None)


def _train(batch: list[TrialRun], *, population: bool, precision: str, finish: Finish, prune: Pruning | None) -> None:
    """Train one run alone or a population; store each record in its trial as it ends, then ``finish`` it."""
    ended: set[int] = set()

    def on_finish(number: int, record: RunRecord) -> None:
        run = batch[number]
        ended.add(number)
        save_record(run.trial, record, run.output_dir)
        if record.reason:
            log.info("trial %d ended %s: %s", run.trial.number, record.status, record.reason)
        finish(run.trial, record)

    specs = [run.spec for run in batch]
    try:
        if population:
            log.info("pid %d: training trials %s as one population (%d members, %s)", os.getpid(),
                     [run.trial.number for run in batch], len(batch), precision)
            train_population(specs, precision, prune=prune, on_finish=on_finish)
        else:
            fit_runs(specs, population=False, prune=prune, on_finish=on_finish)
    except Exception as exc:  # refused before training (the runs cannot train together, a bad folder or target)
        for number, run in enumerate(batch):
            if number not in ended:
                _fail(run, exc, finish)
