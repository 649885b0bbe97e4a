"""Optuna samplers and pruners named in study files and in ``hydra/sweeper=optuna``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from dropout_lab.studies.spec import StudySpec

SAMPLER_NAMES = ("tpe", "random", "grid")
PRUNER_NAMES = ("median", "hyperband", "none")
#: TPE's random start-up trials (Optuna's default), before it models the search space.
TPE_STARTUP_TRIALS = 10
#: The median pruner's finished trials before it prunes, and epochs before it compares.
MEDIAN_STARTUP_TRIALS, MEDIAN_WARMUP_EPOCHS = 3, 0


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for ask-and-tell loops, which stop by themselves.

    The stock sampler calls ``study.stop()`` when the grid is exhausted, which Optuna allows only
    inside ``study.optimize``; the sweeper instead runs at most one trial per grid point.
    """

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001 (Optuna's signature)
        return None


def build_sampler(name: str, seed: int, grid: dict[str, list[Any]] | None = None) -> optuna.samplers.BaseSampler:
    """TPE (default), random, or grid over categorical choices ``grid``."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return AskTellGridSampler(grid or {}, seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)


def build_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """Median or Hyperband pruning on the per-epoch validation metric, or none."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_EPOCHS)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    return optuna.pruners.NopPruner()


def make_sampler(spec: StudySpec, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded by its first seed plus ``offset``."""
    grid = {key: list(dim.choices or []) for key, dim in spec.search_space.items()}
    return build_sampler(spec.sampler, spec.seeds[0] + offset, grid)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner, with the epoch budget as Hyperband's maximum resource."""
    return build_pruner(spec.pruner, spec.epochs)
