"""Populations, config side: which runs may train together, which engine a run needs, the ``population`` setting.

No torch here, so that ``study run`` can decide and say which engine a study uses before any worker starts.

* Runs train as one population when their configs are equal except in :data:`MEMBER_KEYS` (and the
  bookkeeping keys that only say where a run is stored): same architecture, noise technique, epochs,
  batch size and data; each member has its own seed, dropout rates, learning rate, momentum and weight decay.
* A run that needs the activation monitor, test-time evaluation, a logger, or a network or noise
  technique of the user's own is trained per-run (:func:`per_run_reason` says why).
* The ``population`` setting of a study worker is ``1`` (the per-run path), an integer K, or ``auto``.
* With ``data.split=per_seed`` a run's train/validation split follows its ``seed``, a member key: members
  then train and validate on their own splits (``data/datamodule.py``), and still share a population.
* All arms of a study train on one engine and precision (:func:`study_engines`, :func:`require_one_engine`):
  a study whose arms would split between a population and the per-run engine is refused, because
  their numbers would then differ by the engine's numerics too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from dropout_lab.errors import DropoutLabError, InvalidValueError

if TYPE_CHECKING:
    from dropout_lab.config.study_spec import StudySpec

#: Config keys in which members may differ.
MEMBER_KEYS = ("seed", "data.shuffle_seed", "model.dropout_1", "model.dropout_2",
               "optim.lr", "optim.momentum", "optim.weight_decay")
#: Keys that only say where a run is stored or what it reports: members may differ in these too.
BOOKKEEPING_KEYS = ("name", "results_dir", "metric", "optuna")
#: The technique each chapter-net target trains with (``NoisyMLP`` names its own in ``model.noise``).
MODEL_TECHNIQUES = {"dropout_lab.models.DropoutMLPScratch": "dropout",
                    "dropout_lab.models.DropoutMLPConcise": "dropout_concise"}
NOISY_TARGET = "dropout_lab.models.NoisyMLP"
#: Numeric modes of a population: float32, or bfloat16 (matmuls and activations; float32 weights, optimizer, losses).
PRECISIONS = ("fp32", "bf16")
#: The ``engine`` of a run record trained alone, on its own network.
PER_RUN = "per-run"
POPULATION = "population"
AUTO = "auto"


def engine_name(size: int, precision: str = "fp32") -> str:
    """The ``engine`` of a run record trained in a population of ``size`` runs: ``population(K=8, fp32)``."""
    return f"population(K={size}, {precision})"


def engine_precision(engine: str) -> tuple[str, str]:
    """The kind and precision of a record's ``engine``: ``("per-run", "fp32")`` or ``("population", "bf16")``
    for ``population(K=8, bf16)`` (a population's size does not change a member's numbers)."""
    if engine.startswith(f"{POPULATION}(") and engine.endswith(")"):
        return POPULATION, engine[:-1].rsplit(",", 1)[-1].strip()
    return engine, "fp32"  # per-run: float32 (or an engine name this version does not know, as it is)


def parse_population(value: Any, field: str = "population") -> int | str:
    """``1`` (per-run), an integer K >= 1, or ``"auto"``; anything else raises naming ``field``."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        size = int(str(value).strip())
    except ValueError:
        size = 0
    if isinstance(value, bool) or size < 1:
        raise InvalidValueError(field, value, "an integer K >= 1 (1: one run at a time) or 'auto'")
    return size


def check_precision(value: str, field: str = "population_precision") -> str:
    if value not in PRECISIONS:
        raise InvalidValueError(field, value, f"one of {', '.join(PRECISIONS)}")
    return value


def is_member_key(key: str) -> bool:
    """True for a key in which members of one population may differ (:data:`MEMBER_KEYS`, bookkeeping)."""
    return key in MEMBER_KEYS or any(key == k or key.startswith(f"{k}.") for k in BOOKKEEPING_KEYS)


def group_key(params: Mapping[str, Any]) -> tuple:
    """What must be equal for two runs of one study (given by their cell or trial params) to share a population."""
    return tuple(sorted((key, repr(value)) for key, value in params.items() if not is_member_key(key)))


def per_run_reason(cfg: DictConfig) -> str | None:
    """Why run ``cfg`` must be trained per-run rather than in a population; None when it can join one."""
    if OmegaConf.select(cfg, "monitor.enabled"):
        return "monitor.enabled=true (the activation monitor is per-run only)"
    if OmegaConf.select(cfg, "test_time.enabled") or OmegaConf.select(cfg, "test_time.checkpoint"):
        return "test_time is enabled (test-time evaluation and checkpoints are per-run only)"
    if cfg.get("logger"):
        return "a logger is set (a population keeps each member's curves in its record only)"
    target = cfg.model._target_
    if target not in (*MODEL_TECHNIQUES, NOISY_TARGET):
        return f"model._target_={target} is a network without a population version"
    if target == NOISY_TARGET and not isinstance(cfg.model.noise, str):
        return "model.noise is a technique of your own (no population version)"
    return None


@dataclass(frozen=True)
class ArmEngine:
    """The engine one group of a study's cells would train on: the group's shared values (``params``, without
    the member keys), how many cells it holds, ``engine`` (``per-run`` or ``population``), ``precision``,
    and why it is per-run (None in a population)."""

    params: dict[str, Any]
    cells: int
    engine: str
    precision: str
    reason: str | None

    @property
    def label(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.params.items()) or "the study's base config"


def study_engines(spec: StudySpec, cells: Sequence[Mapping[str, Any]], population: Any, precision: str,
                  overrides: Sequence[str] = ()) -> list[ArmEngine]:
    """Which engine and precision each group of ``cells`` (a study's cells; none: its base config) would train on
    with the ``population`` setting, as the workers decide it: one config per group is composed (with the
    study's ``overrides``) and asked :func:`per_run_reason`. A group whose config does not compose is left out:
    the workers fail its runs with the reason."""
    from dropout_lab.config.compose import compose_train_config
    from dropout_lab.config.study_grid import run_overrides

    size = parse_population(population)
    check_precision(precision)
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for cell in cells or [{}]:
        groups.setdefault(group_key(cell), []).append(cell)
    arms = []
    for members in groups.values():
        params = {key: value for key, value in members[0].items() if not is_member_key(key)}
        if size == 1:
            arms.append(ArmEngine(params, len(members), PER_RUN, "fp32", "population size 1"))
            continue
        try:
            cfg = compose_train_config([*run_overrides(spec, members[0]), *overrides])
        except Exception:  # reported per run by the workers
            continue
        reason = per_run_reason(cfg)
        arms.append(ArmEngine(params, len(members), PER_RUN if reason else POPULATION,
                              "fp32" if reason else precision, reason))
    return arms


def require_one_engine(spec: StudySpec, cells: Sequence[Mapping[str, Any]], population: Any, precision: str,
                       overrides: Sequence[str] = ()) -> list[ArmEngine]:
    """:func:`study_engines`, refused (``DropoutLabError``) when a population was requested and the arms would not
    all train on one engine and precision: the error names each group, its engine and why, and the way out."""
    arms = study_engines(spec, cells, population, precision, overrides)
    if len({(arm.engine, arm.precision) for arm in arms}) > 1:
        lines = [f"  {arm.label} ({arm.cells} run{'s' if arm.cells != 1 else ''}): {arm.engine}, {arm.precision}"
                 + (f": {arm.reason}" if arm.reason else "") for arm in arms]
        raise DropoutLabError(
            f"study {spec.name}: population={population} requested, but its arms would train on different "
            "engines, so their comparison would include the engines' numerics:\n" + "\n".join(lines)
            + "\nrun it with --population 1 (every arm per-run), or make every arm population-compatible")
    return arms
