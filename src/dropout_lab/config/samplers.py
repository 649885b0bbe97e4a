"""Optuna samplers and pruners of study files and ``hydra/sweeper=optuna``: short names or ``_target_`` configs.

A sampler (pruner) is given either as a short name (``tpe``, ``median``, see ``SAMPLERS`` and
``PRUNERS``) or, as hydra-optuna-sweeper and lightning-hydra-template write them, as a config
``{_target_: optuna.samplers.TPESampler, n_startup_trials: 5, multivariate: true}`` for any class
of ``optuna.samplers`` (``optuna.pruners``). Configs are checked when a study file or a sweeper
config is loaded and instantiated with Hydra under an execution whitelist of those two packages.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from dropout_lab.errors import InvalidValueError

#: TPE's random start-up trials (Optuna's default), before it models the search space.
TPE_STARTUP_TRIALS = 10
#: The median pruner's finished trials before it prunes, and epochs before it compares.
MEDIAN_STARTUP_TRIALS, MEDIAN_WARMUP_EPOCHS = 3, 0
#: What a sampler or pruner config may instantiate (nested ones too, e.g. a PatientPruner's wrapped pruner).
OPTUNA_TARGETS = ("optuna.samplers.*", "optuna.pruners.*")

SAMPLERS: dict[str, dict[str, Any]] = {
    "tpe": {"_target_": "optuna.samplers.TPESampler", "n_startup_trials": TPE_STARTUP_TRIALS},
    "random": {"_target_": "optuna.samplers.RandomSampler"},
    "grid": {"_target_": "optuna.samplers.GridSampler"},  # search_space: the sweep's choices
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler"},
    "gp": {"_target_": "optuna.samplers.GPSampler"},
    "nsga2": {"_target_": "optuna.samplers.NSGAIISampler"},
    "nsga3": {"_target_": "optuna.samplers.NSGAIIISampler"},
    "qmc": {"_target_": "optuna.samplers.QMCSampler"},
    "bruteforce": {"_target_": "optuna.samplers.BruteForceSampler"},
}
PRUNERS: dict[str, dict[str, Any]] = {
    "median": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": MEDIAN_STARTUP_TRIALS,
               "n_warmup_steps": MEDIAN_WARMUP_EPOCHS},
    "hyperband": {"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 1},  # max_resource: the epochs
    "successive_halving": {"_target_": "optuna.pruners.SuccessiveHalvingPruner"},
    "none": {"_target_": "optuna.pruners.NopPruner"},
}
GRID_SAMPLER = "optuna.samplers.GridSampler"
HYPERBAND_PRUNER = "optuna.pruners.HyperbandPruner"


@dataclass(frozen=True)
class _Kind:
    noun: str
    package: str
    base: type
    shorthands: dict[str, dict[str, Any]]

    def classes(self) -> list[str]:
        module = optuna.samplers if self.package == "optuna.samplers" else optuna.pruners
        return sorted(name for name, obj in vars(module).items() if isinstance(obj, type) and
                      issubclass(obj, self.base) and not name.startswith("Base"))

    def allowed(self) -> str:
        return (f"one of {', '.join(self.shorthands)}, or a config {{_target_: {self.package}.CLASS, ...arguments}} "
                f"with CLASS one of {', '.join(self.classes())}")


_SAMPLER = _Kind("sampler", "optuna.samplers", optuna.samplers.BaseSampler, SAMPLERS)
_PRUNER = _Kind("pruner", "optuna.pruners", optuna.pruners.BasePruner, PRUNERS)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def _class(target: str) -> Any:
    """The object ``target`` names (``package.module.Name``), or None."""
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def _check_nested_targets(value: Any, field: str) -> None:
    if isinstance(value, Mapping):
        target = value.get("_target_")
        if target is not None and not any(str(target).startswith(p[:-1]) for p in OPTUNA_TARGETS):
            raise InvalidValueError(f"{field}._target_", target, f"a class under {' or '.join(OPTUNA_TARGETS)}")
        for key, item in value.items():
            _check_nested_targets(item, f"{field}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_nested_targets(item, f"{field}[{index}]")


def _resolve(value: Any, kind: _Kind, field: str) -> dict[str, Any]:
    value = _plain(value)
    if isinstance(value, str):
        if value not in kind.shorthands:
            raise InvalidValueError(field, value, kind.allowed())
        return dict(kind.shorthands[value])
    if not isinstance(value, Mapping) or not isinstance(value.get("_target_"), str):
        raise InvalidValueError(field, value, kind.allowed())
    config = dict(value)
    target = config["_target_"]
    cls = _class(target) if target.startswith(kind.package + ".") else None
    if not (isinstance(cls, type) and issubclass(cls, kind.base)):
        raise InvalidValueError(f"{field}._target_", target, kind.allowed())
    arguments = {k: v for k, v in config.items() if not k.startswith("_")}
    _check_nested_targets(arguments, field)
    if target == GRID_SAMPLER:  # its search space defaults to the sweep's choices
        arguments.setdefault("search_space", {})
    try:
        inspect.signature(cls).bind(*config.get("_args_", []), **arguments)
    except TypeError as exc:
        names = ", ".join(inspect.signature(cls).parameters)
        raise InvalidValueError(field, value, f"arguments of {target} ({names}): {exc}") from None
    return config


def sampler_config(value: Any, field: str = "sampler") -> dict[str, Any]:
    """The checked ``_target_`` config of a sampler given by short name or config; refuses anything else."""
    return _resolve(value, _SAMPLER, field)


def pruner_config(value: Any, field: str = "pruner", max_epochs: int | None = None) -> dict[str, Any]:
    """The checked ``_target_`` config of a pruner; Hyperband's ``max_resource`` defaults to ``max_epochs``."""
    config = _resolve(value, _PRUNER, field)
    if config["_target_"] == HYPERBAND_PRUNER and max_epochs is not None:
        config.setdefault("max_resource", max_epochs)
    return config


def is_grid(config: Any) -> bool:
    """True for Optuna's grid sampler (short name or config)."""
    return sampler_config(config)["_target_"] == GRID_SAMPLER


def grid_size(config: Any, grid: Mapping[str, list[Any]]) -> int | None:
    """How many points a grid sampler visits (its own ``search_space`` or ``grid``); None for other samplers."""
    config = sampler_config(config)
    if config["_target_"] != GRID_SAMPLER:
        return None
    space = config.get("search_space") or grid
    return math.prod(len(values) for values in space.values())


def _instantiate(config: dict[str, Any], **extra: Any) -> Any:
    from hydra.utils import execution_whitelist, instantiate  # not at import: study status stays light

    return instantiate(config, _convert_="all", **extra,
                       _execution_whitelist_=execution_whitelist(list(OPTUNA_TARGETS), reset=True))


def build_sampler(config: Any, seed: int | None = None, grid: Mapping[str, list[Any]] | None = None,
                  field: str = "sampler") -> optuna.samplers.BaseSampler:
    """Instantiate a sampler; ``seed`` (when given) is its seed, ``grid`` a grid sampler's default search space."""
    config = sampler_config(config, field)
    if config["_target_"] == GRID_SAMPLER and "search_space" not in config:
        config["search_space"] = {key: list(values) for key, values in (grid or {}).items()}
    extra = {}
    if seed is not None and "seed" in inspect.signature(_class(config["_target_"])).parameters:
        extra["seed"] = seed
    return _instantiate(config, **extra)


def build_pruner(config: Any, max_epochs: int | None = None, field: str = "pruner") -> optuna.pruners.BasePruner:
    """Instantiate a pruner (Hyperband with ``max_resource`` = ``max_epochs`` unless given)."""
    return _instantiate(pruner_config(config, field, max_epochs))
