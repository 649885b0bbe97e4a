"""Hydra configuration: schemas, the config folder and value checks."""

from pathlib import Path

from dropout_lab.config.schema import TrainConfig, register_schemas

#: The project's ``conf/`` folder (the package is installed in editable mode from the repo).
CONF_DIR = Path(__file__).resolve().parents[3] / "conf"

register_schemas()

__all__ = ["CONF_DIR", "TrainConfig", "register_schemas"]
