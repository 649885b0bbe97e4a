"""The Hydra application behind ``dropout-lab train``."""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dropout_lab.config import CONF_DIR, register_schemas
from dropout_lab.errors import DropoutLabError
from dropout_lab.training.train import train

log = logging.getLogger("dropout_lab")

register_schemas()


@hydra.main(config_path=str(CONF_DIR), config_name="train")
def train_app(cfg: DictConfig) -> float:
    """Train one run and return its optimized metric (NaN if it failed inside a multirun).

    In a multirun a failed run is logged and recorded, and the sweep goes on; in a single run
    the error ends the program with one clear line.
    """
    hydra_cfg = HydraConfig.get()
    try:
        record = train(cfg, hydra_cfg.runtime.output_dir, overrides=hydra_cfg.overrides.task)
    except DropoutLabError as exc:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.error("run %s failed: %s", hydra_cfg.job.num, exc)
            return float("nan")
        raise SystemExit(f"error: {exc}") from None
    return record.final[cfg.metric]
