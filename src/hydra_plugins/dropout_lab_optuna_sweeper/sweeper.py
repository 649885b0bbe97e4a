"""A Hydra Sweeper that asks Optuna for parameters, launches the jobs, and tells the results.

Compared with hydra-optuna-sweeper: it runs with current Optuna, supports pruning (each job
reports its per-epoch validation metric to its trial through the shared storage), and a
relaunch continues toward the study's total ``n_trials`` instead of starting over.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from dropout_lab.errors import InvalidValueError
from dropout_lab.studies.samplers import PRUNER_NAMES, SAMPLER_NAMES, build_pruner, build_sampler
from dropout_lab.studies.storage import default_storage_url, open_storage

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def distribution_of(override: Override) -> BaseDistribution:
    """An Optuna distribution for a Hydra sweep override."""
    value = override.value()
    key = override.get_key_element()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(value.list))
    if isinstance(value, RangeSweep):
        return CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags or (isinstance(value.start, int) and isinstance(value.end, int)):
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise InvalidValueError(key, override.get_value_element_as_str(),
                            "a sweep: choice(...), range(...), interval(a, b), tag(log, interval(a, b))")


class OptunaSweeper(Sweeper):
    """Ask, launch in batches of ``n_jobs``, tell; stops when the study holds ``n_trials`` finished trials."""

    def __init__(self, study_name: str, storage: str | None, sampler: str, pruner: str, direction: str,
                 n_trials: int, n_jobs: int, seed: int, params: dict[str, str]) -> None:
        if sampler not in SAMPLER_NAMES:
            raise InvalidValueError("hydra.sweeper.sampler", sampler, f"one of {', '.join(SAMPLER_NAMES)}")
        if pruner not in PRUNER_NAMES:
            raise InvalidValueError("hydra.sweeper.pruner", pruner, f"one of {', '.join(PRUNER_NAMES)}")
        for field_, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
            if value < 1:
                raise InvalidValueError(f"hydra.sweeper.{field_}", value, "an integer >= 1")
        self.study_name, self.storage_url = study_name, storage
        self.sampler_name, self.pruner_name, self.direction = sampler, pruner, direction
        self.n_trials, self.n_jobs, self.seed = n_trials, n_jobs, seed
        self.params = dict(params)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _split(self, arguments: list[str]) -> tuple[list[str], dict[str, BaseDistribution]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        fixed, space = [], {}
        for override in overrides:
            key = override.get_key_element()
            if override.is_sweep_override():
                space[key] = distribution_of(override)
            else:
                fixed.append(f"{key}={override.get_value_element_as_str()}")
        return fixed, space

    def _study(self, space: dict[str, BaseDistribution]) -> optuna.Study:
        url = self.storage_url or default_storage_url(self.config.results_dir)
        grid = {k: list(d.choices) for k, d in space.items() if isinstance(d, CategoricalDistribution)}
        pruner = build_pruner(self.pruner_name, int(self.config.trainer.max_epochs))
        study = optuna.create_study(study_name=self.study_name, storage=open_storage(url, heartbeat_interval=None),
                                    pruner=pruner, direction=self.direction, load_if_exists=True)
        # Offset the seed by the trials already stored, so a resumed sweep does not replay them.
        study.sampler = build_sampler(self.sampler_name, self.seed + len(study.trials), grid)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)  # left over by a killed sweep: redo it
        self._url = url
        return study

    def sweep(self, arguments: list[str]) -> Any:
        fixed, space = self._split(arguments)
        if not space:
            raise InvalidValueError("hydra.sweeper.params", self.params, "at least one sweep, e.g. "
                                    "model.dropout_1='interval(0,0.9)'")
        if self.sampler_name == "grid" and not all(isinstance(d, CategoricalDistribution) for d in space.values()):
            raise InvalidValueError("hydra.sweeper.sampler", "grid", "only with choice(...) or range(...) sweeps")
        study = self._study(space)
        Path(self.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, Path(self.config.hydra.sweep.dir) / "multirun.yaml")
        n_trials = self.n_trials
        if self.sampler_name == "grid":
            n_trials = min(n_trials, math.prod(len(d.choices) for d in space.values()))
        job_index = len(study.trials)
        while (done := len(study.get_trials(deepcopy=False, states=FINISHED))) < n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, n_trials - done))]
            batch = [fixed + [f"{k}={v}" for k, v in t.params.items()] +
                     [f"optuna.storage={self._url}", f"optuna.study={self.study_name}",
                      f"optuna.trial={t.number}", f"optuna.pruner={self.pruner_name}"] for t in trials]
            results = self.launcher.launch(batch, initial_job_idx=job_index)
            job_index += len(batch)
            for trial, result in zip(trials, results):
                self._tell(study, trial, result)
        best = study.best_trial
        log.info("best %s=%.4f with %s", self.direction, best.value, best.params)
        return study

    @staticmethod
    def _tell(study: optuna.Study, trial: optuna.Trial, result: Any) -> None:
        status = study.trials[trial.number].user_attrs.get("status")
        value = result._return_value if result.status == JobStatus.COMPLETED else None
        if status == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif isinstance(value, float) and math.isfinite(value):
            study.tell(trial, value)
        else:
            study.tell(trial, state=TrialState.FAIL)
