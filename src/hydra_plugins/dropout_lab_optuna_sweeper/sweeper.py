"""A Hydra Sweeper that asks Optuna for parameters, launches the jobs, and tells the results.

Compared with hydra-optuna-sweeper: it runs with current Optuna, supports pruning (each job
reports its per-epoch validation metric to its trial through the shared storage, with the pruner
the sweeper recorded in the study), and a relaunch or a second sweep on the same study continues
toward the study's total ``n_trials``. Asking and telling is the ask/tell core that ``study run``
workers use too (:class:`dropout_lab.runners.tuner.Tuner`): one seeding policy, heartbeats for
every trial (jobs beat while they train), stale trials re-queued, live ones never failed.

With ``population`` K > 1 it asks ``n_jobs * K`` trials at a time, packs compatible ones (equal
but for seed, rates, learning rate, momentum and weight decay) K to a job, and each job trains its
members as one fused population (``dropout_lab.runners.sweeper_job``); every job stores each
trial's record in it, and the sweeper tells each trial from that record. Runs that need the per-run engine
(instruments, loggers, networks of your own) are launched one per job, with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from dropout_lab.compat import parse_overrides
from dropout_lab.config.engine import check_precision, group_key, is_member_key, per_run_reason
from dropout_lab.config.samplers import is_grid, pruner_config, sampler_config
from dropout_lab.errors import InvalidValueError
from dropout_lab.runners.tuner import Tuner
from dropout_lab.store.backends import default_storage_url

log = logging.getLogger(__name__)


def distribution_of(override: Override) -> BaseDistribution:
    """An Optuna distribution for a Hydra sweep override."""
    value = override.value()
    key = override.get_key_element()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(value.list))  # type: ignore[arg-type]  # Hydra's type allows lists/dicts; a choice() holds scalars
    if isinstance(value, RangeSweep):
        return CategoricalDistribution(list(override.sweep_iterator()))  # type: ignore[arg-type]  # range() yields ints/floats only
    if isinstance(value, IntervalSweep) and value.start is not None and value.end is not None:
        log_scale = "log" in value.tags
        if "int" in value.tags or (isinstance(value.start, int) and isinstance(value.end, int)):
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise InvalidValueError(key, override.get_value_element_as_str(),
                            "a sweep: choice(...), range(...), interval(a, b), tag(log, interval(a, b))")


class OptunaSweeper(Sweeper):
    """Ask, launch in batches of ``n_jobs``, tell; stops when the study holds ``n_trials`` finished trials."""

    def __init__(self, study_name: str | None, storage: str | None, sampler: Any, pruner: Any, direction: str,
                 n_trials: int, n_jobs: int, seed: int, params: dict[str, str], heartbeat: int = 30,
                 population: int = 1, population_precision: str = "fp32") -> None:
        self.sampler = sampler_config(sampler, "hydra.sweeper.sampler")  # refuses unknown names at once
        self.pruner = pruner_config(pruner, "hydra.sweeper.pruner")
        for field_, value in (("n_trials", n_trials), ("n_jobs", n_jobs), ("heartbeat", heartbeat),
                              ("population", population)):
            if value < 1:
                raise InvalidValueError(f"hydra.sweeper.{field_}", value, "an integer >= 1")
        if direction not in ("maximize", "minimize"):
            raise InvalidValueError("hydra.sweeper.direction", direction, "maximize or minimize")
        self.study_name, self.storage_url, self.direction = study_name, storage, direction
        self.n_trials, self.n_jobs, self.seed, self.heartbeat = n_trials, n_jobs, seed, heartbeat
        self.params = dict(params or {})
        self.population = population
        self.population_precision = check_precision(population_precision, "hydra.sweeper.population_precision")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config: DictConfig = config
        self.hydra_context: HydraContext = hydra_context
        self.launcher: Launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _split(self, arguments: list[str]) -> tuple[list[str], dict[str, BaseDistribution]]:
        overrides = parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments),
                                    self.hydra_context.config_loader)
        fixed, space = [], {}
        for override in overrides:
            key = override.get_key_element()
            if override.is_sweep_override():
                space[key] = distribution_of(override)
            else:
                fixed.append(f"{key}={override.get_value_element_as_str()}")
        return fixed, space

    def sweep(self, arguments: list[str]) -> Any:
        fixed, space = self._split(arguments)
        if not space:
            raise InvalidValueError("hydra.sweeper.params", self.params, "at least one sweep, e.g. "
                                    "model.dropout_1='interval(0,0.9)'")
        if (is_grid(self.sampler) and "search_space" not in self.sampler
                and not all(isinstance(d, CategoricalDistribution) for d in space.values())):
            raise InvalidValueError("hydra.sweeper.sampler", "grid", "only with choice(...) or range(...) sweeps")
        study_name = self.study_name or self.config.name
        url = self.storage_url or default_storage_url(self.config.results_dir)
        metric = str(self.config.get("optimized_metric") or self.config.metric)
        tuner = Tuner.open(url, study_name, direction=self.direction, space=space, n_trials=self.n_trials,
                           metric=metric, sampler=self.sampler, pruner=self.pruner,
                           max_epochs=int(self.config.trainer.max_epochs),
                           base_seed=self.seed, heartbeat_interval=self.heartbeat)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        job_index = 0
        links = [f"optuna.storage={url}", f"optuna.study={study_name}", f"optuna.heartbeat={self.heartbeat}"]

        def launch(trials: list[optuna.Trial]) -> None:
            nonlocal job_index
            # One folder per trial, so sweeps on one study started in the same second never share one.
            batch = [fixed + [f"{k}={v}" for k, v in t.params.items()] + links +
                     [f"optuna.trial={t.number}", f"hydra.sweep.subdir=trial_{t.number:05d}"] for t in trials]
            self.launcher.launch(batch, initial_job_idx=job_index)
            job_index += len(batch)

        population = self._population_size(fixed)

        def launch_populations(trials: list[optuna.Trial]) -> None:
            nonlocal job_index
            groups: dict[tuple, list[optuna.Trial]] = {}
            for t in trials:
                groups.setdefault(group_key(t.params), []).append(t)
            chunks = [g[i:i + population] for g in groups.values() for i in range(0, len(g), population)]
            batch = [fixed + [f"{k}={v}" for k, v in chunk[0].params.items() if not is_member_key(k)] + links +
                     [f"optuna.population_trials=[{','.join(str(t.number) for t in chunk)}]",
                      f"optuna.population_precision={self.population_precision}",
                      f"hydra.sweep.subdir=population_{chunk[0].number:05d}"] for chunk in chunks]
            self.launcher.launch(batch, initial_job_idx=job_index)
            job_index += len(batch)

        with tuner:
            if population > 1:
                tuner.run(launch_populations, batch=self.n_jobs * population)
            else:
                tuner.run(launch, batch=self.n_jobs)
        study = tuner.study
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            best = study.best_trial
            log.info("best %s=%.4f with %s", self.direction, best.value, best.params)
        return study

    def _population_size(self, fixed: list[str]) -> int:
        """``population``, or 1 (with a warning) when the sweep's runs need the per-run engine."""
        if self.population == 1:
            return 1
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(fixed))
        reason = per_run_reason(cfg)
        if reason is not None:
            log.warning("hydra.sweeper.population=%d ignored: these runs train per-run: %s", self.population, reason)
            return 1
        log.info("trials train in populations of up to %d (%s)", self.population, self.population_precision)
        return self.population
