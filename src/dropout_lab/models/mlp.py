"""The chapter's two 2-hidden-layer MLPs: dropout from scratch and with ``nn.Dropout``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from dropout_lab.errors import InvalidValueError
from dropout_lab.models.dropout import check_rate, dropout_layer

IMAGE_PIXELS = 28 * 28
NOISY_HINT = "use model=noisy or noise=NAME"


def check_width(value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidValueError(field, value, "a positive integer")
    return value


def _refuse_noise(noise: str | None, noise_kwargs: Mapping[str, Any] | None) -> None:
    """The chapter nets have dropout only: a noise technique belongs to ``NoisyMLP``."""
    if noise is not None:
        raise InvalidValueError("model.noise", noise, f"null for model=scratch/concise; {NOISY_HINT}")
    if noise_kwargs:
        raise InvalidValueError("model.noise_kwargs", dict(noise_kwargs),
                                f"empty for model=scratch/concise; {NOISY_HINT}")


class DropoutMLPScratch(nn.Module):
    """784-h1-h2-out ReLU MLP that calls :func:`dropout_layer` after each hidden activation in training."""

    def __init__(
        self,
        num_hiddens_1: int = 256,
        num_hiddens_2: int = 256,
        dropout_1: float = 0.5,
        dropout_2: float = 0.5,
        num_outputs: int = 10,
        num_inputs: int = IMAGE_PIXELS,
        noise: str | None = None,
        noise_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        _refuse_noise(noise, noise_kwargs)
        self.dropout_1 = check_rate(dropout_1, "model.dropout_1")
        self.dropout_2 = check_rate(dropout_2, "model.dropout_2")
        self.lin1 = nn.Linear(num_inputs, check_width(num_hiddens_1, "model.num_hiddens_1"))
        self.lin2 = nn.Linear(num_hiddens_1, check_width(num_hiddens_2, "model.num_hiddens_2"))
        self.lin3 = nn.Linear(num_hiddens_2, check_width(num_outputs, "model.num_outputs"))
        self.relu = nn.ReLU()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        H1 = self.relu(self.lin1(X.reshape(X.shape[0], -1)))
        if self.training:
            H1 = dropout_layer(H1, self.dropout_1)
        H2 = self.relu(self.lin2(H1))
        if self.training:
            H2 = dropout_layer(H2, self.dropout_2)
        return self.lin3(H2)


class DropoutMLPConcise(nn.Module):
    """The concise version: ``nn.Dropout`` layers inside an ``nn.Sequential``."""

    def __init__(
        self,
        num_hiddens_1: int = 256,
        num_hiddens_2: int = 256,
        dropout_1: float = 0.5,
        dropout_2: float = 0.5,
        num_outputs: int = 10,
        num_inputs: int = IMAGE_PIXELS,
        noise: str | None = None,
        noise_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        _refuse_noise(noise, noise_kwargs)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(num_inputs, check_width(num_hiddens_1, "model.num_hiddens_1")),
            nn.ReLU(),
            nn.Dropout(check_rate(dropout_1, "model.dropout_1")),
            nn.Linear(num_hiddens_1, check_width(num_hiddens_2, "model.num_hiddens_2")),
            nn.ReLU(),
            nn.Dropout(check_rate(dropout_2, "model.dropout_2")),
            nn.Linear(num_hiddens_2, check_width(num_outputs, "model.num_outputs")),
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)
