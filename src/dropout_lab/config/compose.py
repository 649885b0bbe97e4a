"""Compose ``conf/train.yaml`` from Python, inside or outside a running Hydra application."""

from __future__ import annotations

from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from dropout_lab.config.paths import CONF_DIR
from dropout_lab.config.schema import register_schemas


def compose_train_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The run config for ``overrides``, as ``dropout-lab train`` would compose it."""
    register_schemas()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR)):
        return compose(config_name="train", overrides=list(overrides))
