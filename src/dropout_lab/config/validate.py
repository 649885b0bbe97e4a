"""Range checks that a type schema cannot express, for the values no constructor owns.

Rates and widths are checked by the models, batch sizes and splits by the data module; all of
them run before training starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from dropout_lab.errors import InvalidValueError

#: Learning-rate schedules (``optim.schedule``): constant, or cosine annealing over the run's epochs.
SCHEDULES = ("constant", "cosine")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`InvalidValueError` for the first out-of-range value, naming field and range."""
    for key in ("lr", "momentum", "weight_decay"):
        if cfg.optim[key] < 0:
            raise InvalidValueError(f"optim.{key}", cfg.optim[key], "a number >= 0")
    if cfg.optim.get("schedule", "constant") not in SCHEDULES:
        raise InvalidValueError("optim.schedule", cfg.optim.schedule, f"one of {', '.join(SCHEDULES)}")
    if cfg.trainer.max_epochs < 1:
        raise InvalidValueError("trainer.max_epochs", cfg.trainer.max_epochs, "an integer >= 1")
    if cfg.threads is not None and cfg.threads < 1:
        raise InvalidValueError("threads", cfg.threads, "null or an integer >= 1")
    for key in ("every_n_steps", "probe_size"):
        if cfg.monitor[key] < 1:
            raise InvalidValueError(f"monitor.{key}", cfg.monitor[key], "an integer >= 1")
    check_T(list(cfg.test_time.T))


def check_T(T: Sequence[int], field: str = "test_time.T") -> list[int]:
    """Sorted distinct pass counts; raise :class:`InvalidValueError` unless all are integers >= 1."""
    values = list(T)
    if not values or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in values):
        raise InvalidValueError(field, values, "a non-empty list of integers >= 1")
    return sorted(set(values))
