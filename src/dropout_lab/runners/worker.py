"""A study worker: works through a grid study's queue (``grid_worker.py``) or tunes a search-space study.

Tuning goes through the ask/tell core shared with the Hydra sweeper (:class:`~dropout_lab.runners.tuner.Tuner`):
each ask takes one trial (``population=1``) or K / seeds (``population=K`` or ``auto``), trains every seed of
each (``runners/trial_runs.py``) and prunes each trial, all its seeds together, through the trial. Runs train on
their own networks (``engine: per-run``) or as one fused population (``engine: population(K=8, bf16)``).
"""

from __future__ import annotations

import logging

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from dropout_lab.config.compose import compose_train_config
from dropout_lab.config.engine import check_precision, parse_population
from dropout_lab.config.study_grid import run_overrides
from dropout_lab.config.study_spec import StudySpec
from dropout_lab.errors import InvalidValueError
from dropout_lab.runners.grid_worker import run_grid
from dropout_lab.runners.settings import WorkerSettings, population_size, trial_output_dir, trial_overrides
from dropout_lab.runners.trial_runs import TrialRun, train_trials
from dropout_lab.runners.tuner import Tuner, study_seed
from dropout_lab.store.backends import open_storage
from dropout_lab.store.study_setup import open_study

log = logging.getLogger(__name__)


def search_distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    """A tuning study's search space as Optuna distributions (what ``Tuner.ask`` suggests)."""
    space: dict[str, BaseDistribution] = {}
    for key, dim in sorted(spec.search_space.items()):
        if dim.type == "categorical":
            space[key] = CategoricalDistribution(list(dim.choices or []))
            continue
        assert dim.low is not None and dim.high is not None  # checked when the study was loaded
        if dim.type == "int":
            space[key] = IntDistribution(int(dim.low), int(dim.high), log=dim.log)
        else:
            space[key] = FloatDistribution(float(dim.low), float(dim.high), log=dim.log)
    return space


def run_tuning(spec: StudySpec, settings: WorkerSettings) -> int:
    """Ask, train and tell until the study holds ``n_trials`` complete or pruned trials, in total.

    Every trial trains each of the study's seeds (``spec.seed_list``), all of them as one fused population
    (with other trials when ``population`` allows: K is a multiple of the seeds, at least their number), in
    ``population_precision``. Its value is the mean over its seeds of ``spec.objective`` (the validation
    counterpart of the plan's primary metric: ``best_val_acc`` or last-epoch ``val_acc``; without a plan,
    ``metric``); every epoch it reports the mean of that signal so far to its pruner, and a pruned trial
    stops all its seeds. A failed (diverged) seed fails the trial, with the reason: never a mean over the
    surviving seeds. Each seed run keeps its own record (``store/trial_records.py``).
    """
    assert spec.n_trials is not None  # checked when the study was loaded
    seeds = spec.seed_list
    tuner = Tuner.open(settings.storage_url, spec.name, direction=spec.direction, space=search_distributions(spec),
                       n_trials=spec.n_trials, metric=spec.objective, sampler=spec.sampler, pruner=spec.pruner,
                       max_epochs=spec.epochs, base_seed=study_seed(spec), worker_index=settings.worker_index,
                       heartbeat_interval=settings.heartbeat_interval, poll_s=settings.poll_s)
    per_ask, size = 1, len(seeds)
    if settings.population != 1:
        wanted = population_size(settings, compose_train_config(run_overrides(spec, {"seed": seeds[0]})))
        per_ask = max(1, wanted // len(seeds))
        size = per_ask * len(seeds)
    if size > 1:
        log.info("study %s: asking %d trial(s) at a time, %d seed(s) each, trained as one population of %d (%s)",
                 spec.name, per_ask, len(seeds), size, settings.population_precision)

    def evaluate(trials: list[optuna.Trial]) -> None:
        runs = []
        for trial in trials:
            for seed in seeds:
                params = {**trial.params, "seed": seed}
                runs.append(TrialRun(trial, params, trial_overrides(spec, settings, params),
                                     trial_output_dir(spec, settings, trial, seed if len(seeds) > 1 else None)))
        train_trials(runs, size=size, precision=settings.population_precision, metric=spec.objective, pruning=True,
                     finish=tuner.tell)

    with tuner:
        return tuner.run(evaluate, batch=per_ask)


def check_settings(settings: WorkerSettings) -> WorkerSettings:
    """Normalise ``population`` (1, K or ``auto``); check ``population_precision`` and ``workers``, naming the field."""
    settings.population = parse_population(settings.population)
    check_precision(settings.population_precision)
    if settings.workers < 1:
        raise InvalidValueError("workers", settings.workers, "an integer >= 1")
    return settings


def run_worker(spec: StudySpec, settings: WorkerSettings) -> int:
    """Run one worker on an existing study; returns how many runs it finished (tuning: asked)."""
    check_settings(settings)
    if spec.is_tuning:
        return run_tuning(spec, settings)
    storage = open_storage(settings.storage_url, settings.heartbeat_interval)
    return run_grid(open_study(spec, storage), storage, spec, settings)
