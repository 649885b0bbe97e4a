"""Range checks that a type schema cannot express, for the values no constructor owns.

Rates and widths are checked by the models, batch sizes and splits by the data module; all of
them run before training starts.
"""

from __future__ import annotations

from omegaconf import DictConfig

from dropout_lab.errors import InvalidValueError
from dropout_lab.evaluation.test_time import check_T


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`InvalidValueError` for the first out-of-range value, naming field and range."""
    for key in ("lr", "momentum", "weight_decay"):
        if cfg.optim[key] < 0:
            raise InvalidValueError(f"optim.{key}", cfg.optim[key], "a number >= 0")
    if cfg.trainer.max_epochs < 1:
        raise InvalidValueError("trainer.max_epochs", cfg.trainer.max_epochs, "an integer >= 1")
    if cfg.threads is not None and cfg.threads < 1:
        raise InvalidValueError("threads", cfg.threads, "null or an integer >= 1")
    for key in ("every_n_steps", "probe_size"):
        if cfg.monitor[key] < 1:
            raise InvalidValueError(f"monitor.{key}", cfg.monitor[key], "an integer >= 1")
    check_T(list(cfg.test_time.T))
