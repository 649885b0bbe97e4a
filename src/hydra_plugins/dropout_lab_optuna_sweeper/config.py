"""Schema of ``hydra/sweeper=optuna``: hydra-optuna-sweeper's keys, plus a pruner and heartbeats."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    """Tune the run's returned metric with Optuna; every trial is stored in the study.

    ``params`` maps override keys to Hydra sweep syntax: ``interval(0, 0.9)``,
    ``tag(log, interval(1e-3, 1))``, ``choice(a, b)``, ``range(1, 5)``. Sweeps given on the
    command line are added to them. ``sampler`` and ``pruner`` are short names (``tpe``,
    ``median``) or ``_target_`` configs of any ``optuna.samplers`` / ``optuna.pruners`` class.
    ``study_name`` defaults to the run's ``name``, ``storage`` to SQLite under ``results_dir``;
    ``seed`` seeds a sampler whose config has none; jobs beat every ``heartbeat`` seconds.
    ``population`` above 1 asks ``n_jobs * population`` trials at a time and trains up to
    ``population`` compatible ones (equal but for seed, rates, lr, momentum, weight decay) in one
    job as a fused population, in ``population_precision`` (``fp32`` or ``bf16``).
    """

    _target_: str = "hydra_plugins.dropout_lab_optuna_sweeper.sweeper.OptunaSweeper"
    study_name: str | None = None
    storage: str | None = None
    sampler: Any = "tpe"
    pruner: Any = "median"
    direction: str = "maximize"
    n_trials: int = 20
    n_jobs: int = 1
    seed: int = 0
    heartbeat: int = 30
    population: int = 1
    population_precision: str = "fp32"
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf,
                             provider="dropout_lab")
