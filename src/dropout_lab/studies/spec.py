"""Study definitions (``studies/<name>.yaml``), validated against a schema."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dropout_lab.errors import StudySpecError
from dropout_lab.studies.samplers import PRUNER_NAMES as PRUNERS
from dropout_lab.studies.samplers import SAMPLER_NAMES as SAMPLERS

#: The study definitions shipped with the package (``DROPOUT_LAB_STUDIES`` points to another folder).
STUDIES_DIR = Path(os.environ.get("DROPOUT_LAB_STUDIES") or str(files("dropout_lab.studies") / "definitions"))
METRICS = {"val_acc": "maximize", "val_loss": "minimize"}


@dataclass
class SearchDimension:
    """One tuned hyperparameter: ``float``/``int`` in [low, high] (``log`` scale optional) or ``categorical``."""

    type: str = MISSING
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    choices: Optional[list[Any]] = None


@dataclass
class StudySpec:
    """What a study answers and how: overlay, grid or search space, seeds, budget, metric, analysis.

    ``tuned_from`` lists tuning studies: the grid is then each one's best parameters (plus its
    fixed ``key=value`` overrides, e.g. ``noise=gaussian``), rerun with every seed.
    """

    name: str = MISSING
    question: str = MISSING
    epochs: int = MISSING
    experiment: Optional[str] = None
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    search_space: dict[str, SearchDimension] = field(default_factory=dict)
    n_trials: Optional[int] = None
    sampler: str = "tpe"
    pruner: str = "median"
    metric: str = "val_acc"
    analysis: str = "compare"
    tuned_from: list[str] = field(default_factory=list)

    @property
    def is_tuning(self) -> bool:
        """True for a search-space study (Optuna sampler), False for a grid over seeds."""
        return bool(self.search_space)

    @property
    def direction(self) -> str:
        return METRICS[self.metric]


def available_studies(folder: Path = STUDIES_DIR) -> list[str]:
    """Names of the study files in ``folder``."""
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def _check(spec: StudySpec, source: str) -> StudySpec:
    def bad(field_: str, value: Any, allowed: str) -> StudySpecError:
        return StudySpecError(f"{source}: {field_}={value!r} is invalid: allowed {allowed}")

    if spec.epochs < 1:
        raise bad("epochs", spec.epochs, "an integer >= 1")
    if not spec.seeds:
        raise bad("seeds", spec.seeds, "a non-empty list of integers")
    if not spec.grid and not spec.search_space and not spec.tuned_from:
        raise bad("grid", dict(spec.grid), "a non-empty grid or search_space (this study would run nothing)")
    for key, values in spec.grid.items():
        if not values:
            raise bad(f"grid.{key}", list(values), "a non-empty list of values")
    if spec.sampler not in SAMPLERS:
        raise bad("sampler", spec.sampler, f"one of {', '.join(SAMPLERS)}")
    if spec.pruner not in PRUNERS:
        raise bad("pruner", spec.pruner, f"one of {', '.join(PRUNERS)}")
    if spec.metric not in METRICS:
        raise bad("metric", spec.metric, f"one of {', '.join(METRICS)}")
    if spec.is_tuning:
        if spec.n_trials is None or spec.n_trials < 1:
            raise bad("n_trials", spec.n_trials, "an integer >= 1 for a study with a search_space")
        for key, dim in spec.search_space.items():
            if dim.type == "categorical":
                if not dim.choices:
                    raise bad(f"search_space.{key}.choices", dim.choices, "a non-empty list")
            elif dim.type in ("float", "int"):
                if dim.low is None or dim.high is None or dim.low > dim.high:
                    raise bad(f"search_space.{key}", f"[{dim.low}, {dim.high}]", "low <= high, both set")
            else:
                raise bad(f"search_space.{key}.type", dim.type, "float, int or categorical")
        if spec.sampler == "grid" and any(d.type != "categorical" for d in spec.search_space.values()):
            raise bad("sampler", "grid", "only with categorical search dimensions")
    return spec


def load_spec(name_or_path: str, folder: Path = STUDIES_DIR) -> StudySpec:
    """Load and validate a study by name (``studies/NAME.yaml``) or by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = Path(folder) / f"{name_or_path}.yaml"
    if not path.is_file():
        raise StudySpecError(f"unknown study {name_or_path!r}: choose one of "
                             f"{', '.join(available_studies(folder)) or '(none)'} in {folder}")
    try:
        merged: DictConfig = OmegaConf.merge(OmegaConf.structured(StudySpec), OmegaConf.load(path))
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise StudySpecError(f"{path}: missing required field(s): {', '.join(missing)}")
        spec = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise StudySpecError(f"{path}: {str(exc).splitlines()[0]} (full_key: {exc.full_key})") from None
    return _check(spec, str(path))
