"""Optuna samplers and pruners named in study files and sweeper configs."""

from __future__ import annotations

import optuna

from dropout_lab.studies.spec import StudySpec


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """TPE (default), random, or grid over the categorical search space; seeded by the first seed."""
    seed = spec.seeds[0]
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "grid":
        space = {key: list(dim.choices) for key, dim in spec.search_space.items()}
        return optuna.samplers.GridSampler(space, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """Median or Hyperband pruning on the per-epoch validation metric, or none."""
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.epochs)
    return optuna.pruners.NopPruner()
