"""What every noise technique shares: rates, one per member, and each member's random numbers from its own generator.

A single run is a population of one that draws from the global RNG (generator ``None``); the members of a
population each draw from their own generator, so a member's noise never depends on its mates. A technique's
constants (its rate's scale, threshold, ...) are ``[K, 1, 1]`` columns, broadcast over ``[K, rows, cols]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dropout_lab.compat import standard_gamma
from dropout_lab.errors import InvalidValueError
from dropout_lab.models.dropout import check_rate

HALF_OPEN_INTERVAL = "a number in [0, 1)"
#: One generator per member; ``None`` draws from the global RNG (a single run).
Generators = Sequence[torch.Generator | None]
#: How a member's row of random numbers is filled: ``fill(row, rate, generator)``.
Fill = Callable[[torch.Tensor, float, torch.Generator | None], Any]
ONE_RUN: Generators = (None,)


def number(value: Any, field: str, allowed: str, ok: Callable[[float], bool]) -> float:
    """Return ``value`` as a float if it is a number for which ``ok`` holds, else raise."""
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise InvalidValueError(field, value, allowed) from None
    if math.isnan(as_float) or not ok(as_float):
        raise InvalidValueError(field, value, allowed)
    return as_float


def member_column(values: Sequence[float]) -> torch.Tensor:
    """One float32 value per member as a ``[K, 1, 1]`` tensor, broadcastable over ``[K, rows, cols]``."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)


@torch.no_grad()
def keep_members(module: nn.Module, index: torch.Tensor) -> None:
    """Keep rows ``index`` (dimension 0, the member) of ``module``'s own parameters and buffers, in that order.

    Parameters keep their identity (their ``data`` shrinks), so an optimizer holding them stays valid.
    """
    for param in module.parameters(recurse=False):
        param.data = param.data.index_select(0, index)
        param.grad = None
    for name, buffer in list(module.named_buffers(recurse=False)):
        setattr(module, name, buffer.index_select(0, index))


# ---------------------------------------------------------------------------------------------
# Random numbers, one row per member
# ---------------------------------------------------------------------------------------------

def uniform(row: torch.Tensor, rate: float, generator: torch.Generator | None) -> None:
    row.uniform_(generator=generator)


def normal(row: torch.Tensor, rate: float, generator: torch.Generator | None) -> None:
    row.normal_(generator=generator)


def gamma(row: torch.Tensor, rate: float, generator: torch.Generator | None) -> None:
    """Gamma(k, k), k = (1 - p) / p, as ``torch.distributions.Gamma(k, k).sample`` computes it."""
    shape = torch.tensor((1.0 - rate) / rate, dtype=row.dtype, device=row.device)
    row.copy_(standard_gamma(shape.expand(row.shape), generator) / shape)
    row.clamp_(min=torch.finfo(row.dtype).tiny)


class MemberDraws:
    """Random numbers for all members in one reusable float32 buffer ``[K, *shape]`` per shape.

    Row ``k`` is refilled by ``fill(row, rates[k], generators[k])`` where ``drawing[k]`` is true;
    other rows keep ``fill_value``. The next call overwrites the buffer (autograd notices if a
    saved buffer is overwritten before its backward pass).
    """

    def __init__(self, fill: Fill, fill_value: float = 0.0) -> None:
        self.fill = fill
        self.fill_value = fill_value
        self._buffers: dict[tuple, torch.Tensor] = {}

    def __call__(self, shape: Sequence[int], rates: Sequence[float], drawing: Sequence[bool],
                 generators: Generators, device: torch.device) -> torch.Tensor:
        key = (len(rates), *shape, device)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = torch.full((len(rates), *shape), self.fill_value, device=device)
        for row, rate, draw, generator in zip(buffer, rates, drawing, generators, strict=True):
            if draw:
                self.fill(row, rate, generator)
        return buffer

    def clear(self) -> None:
        """Forget the buffers (after the members changed)."""
        self._buffers.clear()


# ---------------------------------------------------------------------------------------------
# Rates and parameters
# ---------------------------------------------------------------------------------------------

class RateSpec:
    """What a technique accepts: its rate range (``check_rate``) and its extra parameters (``PARAMS``)."""

    #: Extra keyword parameters (``noise_kwargs``) and what each allows.
    PARAMS: dict[str, str] = {}

    @classmethod
    def check_rate(cls, rate: Any, field: str = "rate") -> float:
        """Return ``rate`` as a float if this technique allows it (default: [0, 1])."""
        return check_rate(rate, field)

    @classmethod
    def check_params(cls, params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        """Refuse parameters this technique does not have; subclasses check the values."""
        for key, value in params.items():
            if key not in cls.PARAMS:
                allowed = (f"one of {sorted(cls.PARAMS)}" if cls.PARAMS
                           else "no parameters for this technique (empty noise_kwargs)")
                raise InvalidValueError(f"{prefix}noise_kwargs.{key}", value, allowed)
        return dict(params)


class MemberRates(RateSpec, nn.Module):
    """A technique's rates, one per member, checked; their constants as ``[K, 1, 1]`` buffers.

    ``FILL`` draws a member's random numbers; ``DRAWS(rate)`` says whether a member at that rate
    draws any; ``CONSTANTS`` maps each constant's name to its value at a rate.
    """

    FILL: Fill = staticmethod(uniform)
    FILL_VALUE = 0.0
    DRAWS: Callable[[float], bool] = staticmethod(lambda p: p > 0.0)
    CONSTANTS: dict[str, Callable[[float], float]] = {}

    def __init__(self, rate: float | Sequence[float], field: str = "rate") -> None:
        super().__init__()
        rates = [rate] if isinstance(rate, (int, float)) else list(rate)
        self.rates = [self.check_rate(p, field) for p in rates]
        self.drawing = [self.DRAWS(p) for p in self.rates]
        self.draws = MemberDraws(self.FILL, self.FILL_VALUE)
        for name, value in self.CONSTANTS.items():
            self.register_buffer(name, member_column([value(p) for p in self.rates]), persistent=False)

    @property
    def rate(self) -> float:
        """The rate of a single run (a population of one)."""
        if len(self.rates) != 1:
            raise AttributeError(f"{type(self).__name__} has {len(self.rates)} members: read .rates")
        return self.rates[0]

    def draw(self, shape: Sequence[int], generators: Generators, device: torch.device) -> torch.Tensor:
        """``[K, *shape]`` random numbers, row ``k`` from ``generators[k]`` (see :class:`MemberDraws`)."""
        return self.draws(shape, self.rates, self.drawing, generators, device)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at positions ``index`` (in that order)."""
        positions = index.tolist()
        self.rates = [self.rates[i] for i in positions]
        self.drawing = [self.drawing[i] for i in positions]
        keep_members(self, index)
        self.draws.clear()

    def extra_repr(self) -> str:
        return f"rate={self.rates[0]}" if len(self.rates) == 1 else f"rates={self.rates}"


def keep_and_scale(x: torch.Tensor, u: torch.Tensor, threshold: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Dropout's formula: keep where ``u > threshold`` (u ~ U(0, 1), threshold p), scale survivors by 1/(1-p)."""
    return x * ((u > threshold) * scale)


#: Dropout's constants: ``threshold`` (-1 at p = 0: keep all; 2 at p = 1: keep none) and ``scale`` (0 at p = 1).
DROPOUT_CONSTANTS: dict[str, Callable[[float], float]] = {
    "threshold": lambda p: -1.0 if p == 0 else 2.0 if p == 1 else p,
    "scale": lambda p: 1.0 / (1.0 - p) if p < 1 else 0.0,
}


def _inside_unit_interval(p: float) -> bool:
    return 0.0 < p < 1.0


class KeepRates(MemberRates):
    """The rates of techniques that keep a unit (or weight) where ``u > p`` and scale it by 1/(1-p): dropout's."""

    DRAWS = staticmethod(_inside_unit_interval)  # p = 0 keeps all and p = 1 none, without drawing
    CONSTANTS = DROPOUT_CONSTANTS
    threshold: torch.Tensor
    scale: torch.Tensor

    def kept(self, x: torch.Tensor, generators: Generators, group_size: int = 1) -> torch.Tensor:
        """``x`` with each member's entries kept or dropped, ``group_size`` neighbours along the last dimension
        together (one draw per group; a last group may be shorter)."""
        width = x.shape[-1]
        u = self.draw((*x.shape[1:-1], -(-width // group_size)), generators, x.device)
        if group_size > 1:
            u = u.repeat_interleave(group_size, dim=-1)[..., :width]
        return keep_and_scale(x, u, self.threshold, self.scale)
