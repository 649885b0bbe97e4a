"""What every noise technique shares: rates, one per member, and each member's random numbers from its own stream.

A single run is a population of one that draws from the global RNG (``ONE_RUN``), exactly as the chapter's
code does; the members of a population draw from their counter-based streams (``models/counter_rng.py``):
all members in one batched operation, each member's numbers a function of its own seed only, so a member's
noise never depends on its mates. A technique's constants (its rate's scale, threshold, ...) are ``[K, 1, 1]``
columns, broadcast over ``[K, rows, cols]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from dropout_lab.compat import standard_gamma
from dropout_lab.errors import InvalidValueError
from dropout_lab.models.counter_rng import MemberStreams
from dropout_lab.models.dropout import check_rate

HALF_OPEN_INTERVAL = "a number in [0, 1)"
#: Where a run's random numbers come from: the global RNG (``ONE_RUN``: a single run, as the chapter's code) or
#: the members' counter-based streams (a population).
Generators = Sequence[torch.Generator | None]
Source = Generators | MemberStreams
#: How a single run's row of random numbers is filled: ``fill(row, rate, generator)``.
Fill = Callable[[torch.Tensor, float, torch.Generator | None], Any]
#: How a population's ``[K, *shape]`` numbers are drawn: ``batched(streams, slot, shape, rates)``.
Batched = Callable[[MemberStreams, int, Sequence[int], Sequence[float]], torch.Tensor]
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


def gamma_row(row: torch.Tensor, rate: float, generator: torch.Generator | None) -> None:
    """Gamma(k, k), k = (1 - p) / p, as ``torch.distributions.Gamma(k, k).sample`` computes it."""
    shape = torch.tensor((1.0 - rate) / rate, dtype=row.dtype, device=row.device)
    row.copy_(standard_gamma(shape.expand(row.shape), generator) / shape)
    row.clamp_(min=torch.finfo(row.dtype).tiny)


def gamma_members(streams: MemberStreams, slot: int, shape: Sequence[int], rates: Sequence[float]) -> torch.Tensor:
    """Gamma(k, k), k = (1 - p) / p, per member (k = 1 where p is 0 or 1: those members do not draw)."""
    k = torch.tensor([(1.0 - p) / p if 0.0 < p < 1.0 else 1.0 for p in rates], device=streams.device).view(-1, 1, 1)
    return (streams.gamma_draw(slot, shape, k) / k).clamp_(min=torch.finfo(torch.float32).tiny)


class Draws(NamedTuple):
    """A technique's random numbers: a single run's row from the global RNG, a population's from its streams."""

    fill: Fill
    batched: Batched


UNIFORM = Draws(uniform, lambda streams, slot, shape, rates: streams.uniform(slot, shape))
NORMAL = Draws(normal, lambda streams, slot, shape, rates: streams.normal(slot, shape))
GAMMA = Draws(gamma_row, gamma_members)


class OneRunDraws:
    """A single run's random numbers from the global RNG, in one reusable float32 buffer per shape.

    The buffer is refilled by ``fill(row, rate, None)`` where the run draws; otherwise it keeps
    ``fill_value``. The next call overwrites it (autograd notices if a saved buffer is overwritten
    before its backward pass).
    """

    def __init__(self, fill: Fill, fill_value: float = 0.0) -> None:
        self.fill = fill
        self.fill_value = fill_value
        self._buffers: dict[tuple, torch.Tensor] = {}

    def __call__(self, shape: Sequence[int], rate: float, drawing: bool, device: torch.device) -> torch.Tensor:
        key = (*shape, device)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = torch.full((1, *shape), self.fill_value, device=device)
        if drawing:
            self.fill(buffer[0], rate, None)
        return buffer


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

    ``FILL`` draws the random numbers; ``DRAWS(rate)`` says whether a member at that rate draws any
    (the others get ``FILL_VALUE``); ``CONSTANTS`` maps each constant's name to its value at a rate.
    ``slot`` tells a population's noise layers apart (a net numbers its layers 0, 1, ...).
    """

    FILL: Draws = UNIFORM
    FILL_VALUE = 0.0
    DRAWS: Callable[[float], bool] = staticmethod(lambda p: p > 0.0)
    CONSTANTS: dict[str, Callable[[float], float]] = {}

    def __init__(self, rate: float | Sequence[float], field: str = "rate") -> None:
        super().__init__()
        rates = [rate] if isinstance(rate, (int, float)) else list(rate)
        self.rates = [self.check_rate(p, field) for p in rates]
        self.drawing = [self.DRAWS(p) for p in self.rates]
        self.slot = 0
        self.draws = OneRunDraws(self.FILL.fill, self.FILL_VALUE)
        self.register_buffer("drawing_column", torch.tensor(self.drawing).view(-1, 1, 1), persistent=False)
        for name, value in self.CONSTANTS.items():
            self.register_buffer(name, member_column([value(p) for p in self.rates]), persistent=False)

    @property
    def rate(self) -> float:
        """The rate of a single run (a population of one)."""
        if len(self.rates) != 1:
            raise AttributeError(f"{type(self).__name__} has {len(self.rates)} members: read .rates")
        return self.rates[0]

    drawing_column: torch.Tensor

    def draw(self, shape: Sequence[int], source: Source, device: torch.device) -> torch.Tensor:
        """``[K, *shape]`` float32 random numbers: member ``k``'s from its stream (a population, in one batched
        operation) or a single run's from the global RNG (``ONE_RUN``); ``FILL_VALUE`` where a member does not draw."""
        if isinstance(source, MemberStreams):
            values = self.FILL.batched(source, self.slot, shape, self.rates)
            return values if all(self.drawing) else torch.where(self.drawing_column, values, self.FILL_VALUE)
        if len(self.rates) != 1:
            raise ValueError(f"{len(self.rates)} members draw from their MemberStreams, not from the global RNG")
        return self.draws(shape, self.rates[0], self.drawing[0], device)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at positions ``index`` (in that order)."""
        positions = index.tolist()
        self.rates = [self.rates[i] for i in positions]
        self.drawing = [self.drawing[i] for i in positions]
        keep_members(self, index)

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

    def kept(self, x: torch.Tensor, source: Source, group_size: int = 1) -> torch.Tensor:
        """``x`` with each member's entries kept or dropped, ``group_size`` neighbours along the last dimension
        together (one draw per group; a last group may be shorter). A population's single-unit masks are one
        fused kernel (mask drawn and applied; the backward pass applies the kept mask), in ``x``'s dtype."""
        if isinstance(source, MemberStreams) and group_size == 1:
            return source.scale_by_mask(x, self.slot, self.threshold, self.scale)
        width = x.shape[-1]
        u = self.draw((*x.shape[1:-1], -(-width // group_size)), source, x.device)
        if group_size > 1:
            u = u.repeat_interleave(group_size, dim=-1)[..., :width]
        return keep_and_scale(x, u, self.threshold, self.scale)
