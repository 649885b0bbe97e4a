"""A trained network saved next to its run record (``model.pt``), and a loader's batches as tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_NAME = "model.pt"


def save_checkpoint(net: nn.Module, config: dict[str, Any], folder: str | Path) -> Path:
    """Write ``{"state_dict", "config"}`` (weights on the CPU, the resolved config) to ``folder/model.pt``."""
    path = Path(folder) / CHECKPOINT_NAME
    state = {name: tensor.detach().cpu() for name, tensor in net.state_dict().items()}
    torch.save({"state_dict": state, "config": config}, path)
    return path


def split_tensors(batches: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(X, y)`` batches of a loader, concatenated."""
    Xs, ys = zip(*batches)
    return torch.cat(Xs), torch.cat(ys)
