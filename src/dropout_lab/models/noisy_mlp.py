"""The chapter's MLP with a noise technique of choice, each hidden layer at its own rate."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from dropout_lab.errors import InvalidValueError
from dropout_lab.models.mlp import IMAGE_PIXELS, check_width
from dropout_lab.models.noise import WEIGHT_TECHNIQUES, make_noise, technique


class NoisyMLP(nn.Module):
    """784-h1-h2-out ReLU MLP with technique ``noise`` after hidden layer k at rate ``dropout_k``.

    Layers are ``lin1``, ``lin2`` (hidden) and ``lin3`` (output); the activation noise modules are
    ``noise1`` and ``noise2``, so the input of ``lin2`` is layer 1's activation after noise and
    relu(output of ``lin1``) the one before. For ``noise="dropconnect"``, ``lin1`` and ``lin2`` are
    :class:`DropConnectLinear` at rates ``dropout_1`` and ``dropout_2`` and ``noise1``/``noise2``
    are ``nn.Identity``. ``noise_kwargs`` are the technique's extra parameters (e.g. ``group_size``).

    ``noise`` may instead be a factory of a user's own activation technique, ``noise(rate,
    **noise_kwargs) -> nn.Module``: in a config, a ``_target_`` with ``_partial_: true``.
    """

    def __init__(
        self,
        num_hiddens_1: int = 256,
        num_hiddens_2: int = 256,
        dropout_1: float = 0.5,
        dropout_2: float = 0.5,
        num_outputs: int = 10,
        noise: str | Callable[..., nn.Module] = "dropout",
        noise_kwargs: Mapping[str, Any] | None = None,
        num_inputs: int = IMAGE_PIXELS,
    ) -> None:
        super().__init__()
        kwargs = dict(noise_kwargs or {})
        widths = (check_width(num_hiddens_1, "model.num_hiddens_1"),
                  check_width(num_hiddens_2, "model.num_hiddens_2"),
                  check_width(num_outputs, "model.num_outputs"))
        if callable(noise):  # a user's technique, built per layer from its rate
            self.noise = _factory_name(noise)
            self.noise1: nn.Module = _user_noise(noise, dropout_1, kwargs)
            self.noise2: nn.Module = _user_noise(noise, dropout_2, kwargs)
            self.dropout_1 = getattr(self.noise1, "rate", dropout_1)
            self.dropout_2 = getattr(self.noise2, "rate", dropout_2)
            self.lin1 = nn.Linear(num_inputs, widths[0])
            self.lin2 = nn.Linear(widths[0], widths[1])
        elif noise in WEIGHT_TECHNIQUES:
            self.noise = noise
            entry = technique(noise, "model.noise")
            entry.cls.check_params(kwargs, "model.")
            self.dropout_1 = entry.cls.check_rate(dropout_1, "model.dropout_1")
            self.dropout_2 = entry.cls.check_rate(dropout_2, "model.dropout_2")
            self.lin1 = entry.cls(num_inputs, widths[0], p=self.dropout_1)
            self.lin2 = entry.cls(widths[0], widths[1], p=self.dropout_2)
            self.noise1 = nn.Identity()
            self.noise2 = nn.Identity()
        else:  # make_noise refuses an unknown name, naming model.noise
            self.noise = noise
            self.noise1 = make_noise(noise, dropout_1, field="model.dropout_1", prefix="model.", **kwargs)
            self.noise2 = make_noise(noise, dropout_2, field="model.dropout_2", prefix="model.", **kwargs)
            self.dropout_1, self.dropout_2 = self.noise1.rate, self.noise2.rate
            self.lin1 = nn.Linear(num_inputs, widths[0])
            self.lin2 = nn.Linear(widths[0], widths[1])
        self.lin3 = nn.Linear(widths[1], widths[2])
        self.relu = nn.ReLU()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        H1 = self.noise1(self.relu(self.lin1(X.reshape(X.shape[0], -1))))
        H2 = self.noise2(self.relu(self.lin2(H1)))
        return self.lin3(H2)

    def extra_repr(self) -> str:
        return f"noise={self.noise!r}, dropout_1={self.dropout_1}, dropout_2={self.dropout_2}"


def _factory_name(factory: Callable[..., Any]) -> str:
    func = getattr(factory, "func", factory)  # a functools.partial from ``_partial_: true``
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', type(func).__name__)}"


def _user_noise(factory: Callable[..., Any], rate: float, kwargs: dict[str, Any]) -> nn.Module:
    """A user's technique at ``rate``: ``factory(rate, **noise_kwargs)`` must return an ``nn.Module``."""
    module = factory(rate, **kwargs)
    if not isinstance(module, nn.Module):
        raise InvalidValueError("model.noise", _factory_name(factory), "a technique name, or a _target_ "
                                "(with _partial_: true) that builds an nn.Module from its rate")
    return module
