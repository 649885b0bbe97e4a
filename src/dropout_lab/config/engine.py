"""Populations, config side: which runs may train together, which engine a run needs, the ``population`` setting.

No torch here, so that ``study run`` can decide and say which engine a study uses before any worker starts.

* Runs train as one population when their configs are equal except in :data:`MEMBER_KEYS` (and the
  bookkeeping keys that only say where a run is stored): same architecture, noise technique, epochs,
  batch size and data; each member has its own seed, dropout rates, learning rate, momentum and weight decay.
* A run that needs the activation monitor, test-time evaluation, a logger, or a network or noise
  technique of the user's own is trained per-run (:func:`per_run_reason` says why).
* The ``population`` setting of a study worker is ``1`` (the per-run path), an integer K, or ``auto``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dropout_lab.errors import InvalidValueError

#: Config keys in which members may differ.
MEMBER_KEYS = ("seed", "data.shuffle_seed", "model.dropout_1", "model.dropout_2",
               "optim.lr", "optim.momentum", "optim.weight_decay")
#: Keys that only say where a run is stored or what it reports: members may differ in these too.
BOOKKEEPING_KEYS = ("name", "results_dir", "metric", "optuna")
#: The technique each chapter-net target trains with (``NoisyMLP`` names its own in ``model.noise``).
MODEL_TECHNIQUES = {"dropout_lab.models.DropoutMLPScratch": "dropout",
                    "dropout_lab.models.DropoutMLPConcise": "dropout_concise"}
NOISY_TARGET = "dropout_lab.models.NoisyMLP"
#: Numeric modes of a population: float32, or bfloat16 autocast (``precision="bf16-mixed"``).
PRECISIONS = ("fp32", "bf16")
#: The ``engine`` of a run record trained alone, on its own network.
PER_RUN = "per-run"
AUTO = "auto"


def engine_name(size: int, precision: str = "fp32") -> str:
    """The ``engine`` of a run record trained in a population of ``size`` runs: ``population(K=8, fp32)``."""
    return f"population(K={size}, {precision})"


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
