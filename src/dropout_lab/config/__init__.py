"""Hydra configuration: schemas, the packaged config folder, instantiable targets and value checks."""

from dropout_lab.config.paths import CONF_DIR
from dropout_lab.config.schema import TrainConfig, register_schemas

__all__ = ["CONF_DIR", "TrainConfig", "register_schemas"]
