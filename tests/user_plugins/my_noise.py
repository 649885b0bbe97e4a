"""A user's own noise technique and network, outside the package (see tests/test_user_targets.py).

Chosen from the command line with ``instantiable=[user_plugins.*]`` plus
``noise=dropout 'model.noise={_target_: user_plugins.my_noise.LaplaceNoise, _partial_: true}'`` or
``model._target_=user_plugins.my_noise.TinyNet``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class LaplaceNoise(nn.Module):
    """Multiplicative 1 + Laplace(0, b) noise with dropout's variance p/(1-p): b = sqrt(p / (2(1-p)))."""

    def __init__(self, rate: float, scale: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate={rate!r} is invalid: allowed a number in [0, 1)")
        self.rate = rate
        self.b = scale * math.sqrt(rate / (2 * (1 - rate)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return h
        u = torch.rand_like(h) - 0.5
        return h * (1 - self.b * torch.sign(u) * torch.log1p(-2 * u.abs()))


class TinyNet(nn.Module):
    """784-h-10 with dropout at ``dropout_1``; takes the ``model.*`` fields and ignores the others."""

    def __init__(self, num_hiddens_1: int = 64, dropout_1: float = 0.5, num_outputs: int = 10, **unused: Any) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_hiddens_1), nn.ReLU(),
                                    nn.Dropout(dropout_1), nn.Linear(num_hiddens_1, num_outputs))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.layers(X)
