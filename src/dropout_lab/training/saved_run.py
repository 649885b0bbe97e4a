"""A saved run (record plus ``model.pt``) rebuilt for evaluation on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import execution_whitelist, instantiate
from omegaconf import OmegaConf
from torch import nn

from dropout_lab.config.targets import run_whitelist
from dropout_lab.errors import DropoutLabError
from dropout_lab.evaluation.checkpoint import CHECKPOINT_NAME
from dropout_lab.training.run_record import RunRecord


def load_run(run_dir: str | Path, data_root: str | None = None) -> tuple[RunRecord, nn.Module, Any]:
    """The record, the trained network (eval mode, CPU) and the set-up data module of a saved run.

    The network and data module are rebuilt from the record's config with Hydra's ``instantiate`` under the
    same execution whitelist as training; ``data_root`` replaces the recorded ``data.root``.
    """
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        raise DropoutLabError(f"no {CHECKPOINT_NAME} in {run_dir}: train with test_time.checkpoint=true")
    record = RunRecord.read(run_dir)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(record.config)
    if data_root is not None:
        cfg.data.root = data_root
    with execution_whitelist(run_whitelist(cfg)):
        net = instantiate(cfg.model)
        datamodule = instantiate(cfg.data)
    net.load_state_dict(saved["state_dict"])
    datamodule.setup("test")
    return record, net.eval(), datamodule
