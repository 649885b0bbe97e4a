"""A study worker's settings, its population size, and where each of its trials' runs is composed and written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig

from dropout_lab.config.engine import AUTO
from dropout_lab.config.study_grid import run_overrides
from dropout_lab.config.study_spec import StudySpec
from dropout_lab.training.sizing import auto_population_size


@dataclass
class WorkerSettings:
    """Where a worker stores and writes, what it adds to every run's overrides, and how it trains.

    ``population``: ``1`` trains one run at a time (the per-run engine); K > 1 or ``"auto"`` trains up
    to K compatible runs as one fused population (``runners/trial_runs.py``), in ``population_precision``
    (``fp32`` or ``bf16``). ``workers``: how many workers share the study on this host (``auto``
    splits the free memory and the queue between them).
    """

    storage_url: str
    results_dir: str
    extra_overrides: list[str] = field(default_factory=list)
    heartbeat_interval: int | None = 30
    poll_s: float = 2.0
    worker_index: int = 0
    population: int | str = 1
    population_precision: str = "fp32"
    workers: int = 1


def trial_overrides(spec: StudySpec, settings: WorkerSettings, params: Mapping[str, Any]) -> list[str]:
    """The Hydra overrides of the run of a trial with ``params``."""
    return run_overrides(spec, params) + [f"results_dir={settings.results_dir}", *settings.extra_overrides]


def trial_output_dir(spec: StudySpec, settings: WorkerSettings, trial: optuna.Trial, seed: int | None = None) -> str:
    """The folder of a trial's ``run.json`` copy (of its run of ``seed``, for a trial of several seeds)."""
    folder = Path(settings.results_dir) / "studies" / spec.name / f"trial_{trial.number:05d}"
    return str(folder if seed is None else folder / f"seed_{seed}")


def population_size(settings: WorkerSettings, cfg: DictConfig) -> int:
    """K for runs like ``cfg``: the setting, or for ``auto`` the device and memory rule."""
    if settings.population == AUTO:
        return auto_population_size(cfg, settings.workers)
    return int(settings.population)
