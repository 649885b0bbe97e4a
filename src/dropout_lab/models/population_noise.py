"""The noise techniques of :mod:`dropout_lab.models.noise` for a population: per-member rates and generators.

Each module acts on ``h`` of shape ``[K, batch, width]`` (member ``k``'s activations in row ``k``)
with one rate per member, and draws member ``k``'s noise from ``generators[k]`` only, with the same
calls (and so the same numbers) as the single-run technique drawing from a generator in the same
state. The formulas are the single-run ones, so every technique stays unbiased (E[h'] = h) per
member. A member at rate 0 draws nothing and passes ``h`` through unchanged.

The random numbers go into one preallocated float32 buffer per shape (:class:`MemberDraws`), one
generator call per member; masks are ``u > p`` (as :func:`~dropout_lab.models.dropout.dropout_layer`
draws them), about 4x cheaper on the CPU than ``bernoulli_``. Both ``dropout`` and
``dropout_concise`` use them: the masks of ``nn.Dropout`` have the same distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dropout_lab.errors import InvalidValueError
from dropout_lab.models.noise import WEIGHT_TECHNIQUES, technique
from dropout_lab.models.stacked import StackedLinear, keep_members, member_column

Generators = Sequence[torch.Generator]
#: How a member's row of random numbers is filled: ``fill(row, rate, generator)``.
Fill = Callable[[torch.Tensor, float, torch.Generator], Any]


def _inside_unit_interval(rate: float) -> bool:
    return 0.0 < rate < 1.0


def _positive(rate: float) -> bool:
    return rate > 0.0


def _uniform(row: torch.Tensor, rate: float, generator: torch.Generator) -> None:
    row.uniform_(generator=generator)


def _normal(row: torch.Tensor, rate: float, generator: torch.Generator) -> None:
    row.normal_(generator=generator)


def _gamma(row: torch.Tensor, rate: float, generator: torch.Generator) -> None:
    """Gamma(k, k), k = (1 - p) / p, as ``torch.distributions.Gamma(k, k).sample`` computes it."""
    shape = torch.tensor((1.0 - rate) / rate, dtype=row.dtype, device=row.device)
    row.copy_(torch._standard_gamma(shape.expand(row.shape), generator=generator) / shape)
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


class _MemberRates(nn.Module):
    """Per-member rates of technique ``name``, checked as the single-run technique checks them.

    ``rates`` is the Python list (for drawing decisions: member ``k`` draws where ``drawing[k]``);
    per-member constants derived from it are ``[K, 1, 1]`` buffers (they follow the module's
    device). :meth:`keep` compacts both.
    """

    name = "dropout"
    #: Whether a member at this rate draws random numbers (dropout-like techniques: not at 0 or 1).
    DRAWS = staticmethod(_inside_unit_interval)
    draws: MemberDraws

    def __init__(self, rates: Sequence[float], field: str = "rate") -> None:
        super().__init__()
        entry = technique(self.name, field)
        self.rates = [entry.cls.check_rate(rate, field) for rate in rates]
        self.drawing = [self.DRAWS(rate) for rate in self.rates]

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at positions ``index`` (in that order)."""
        positions = index.tolist()
        self.rates = [self.rates[i] for i in positions]
        self.drawing = [self.drawing[i] for i in positions]
        keep_members(self, index)
        self.draws.clear()

    def extra_repr(self) -> str:
        return f"rates={self.rates}"


def _dropout_constants(module: nn.Module, rates: Sequence[float]) -> None:
    """Buffers ``threshold`` (keep where ``u > threshold``) and ``scale`` (1/(1-p), 0 at p = 1) per member."""
    module.register_buffer("threshold", member_column([-1.0 if p == 0 else 2.0 if p == 1 else p for p in rates]),
                           persistent=False)
    module.register_buffer("scale", member_column([1.0 / (1.0 - p) if p < 1 else 0.0 for p in rates]),
                           persistent=False)


class PopulationNoise(_MemberRates):
    """Base class: ``perturb(h, generators)`` runs in training mode when some rate is above 0."""

    DRAWS = staticmethod(_positive)
    #: How rows of random numbers are drawn, and their value for members that draw nothing.
    FILL = staticmethod(_uniform)
    FILL_VALUE = 0.0
    #: Each member's factor from its rate, kept as the ``[K, 1, ...]`` column ``scale`` (None: no column).
    MEMBER_SCALE: Callable[[float], float] | None = None
    scale: torch.Tensor

    def __init__(self, rates: Sequence[float], field: str = "rate") -> None:
        super().__init__(rates, field)
        self.draws = MemberDraws(self.FILL, self.FILL_VALUE)
        if self.MEMBER_SCALE is not None:
            self.register_buffer("scale", member_column([self.MEMBER_SCALE(p) for p in self.rates]), persistent=False)

    def forward(self, h: torch.Tensor, generators: Generators) -> torch.Tensor:
        if not self.training or not any(self.rates):
            return h
        return self.perturb(h, generators)

    def perturb(self, h: torch.Tensor, generators: Generators) -> torch.Tensor:
        raise NotImplementedError

    def draw(self, shape: Sequence[int], generators: Generators, device: torch.device) -> torch.Tensor:
        """``[K, *shape]`` random numbers, row ``k`` from ``generators[k]`` (see :class:`MemberDraws`)."""
        return self.draws(shape, self.rates, self.drawing, generators, device)


class PopulationDropout(PopulationNoise):
    """Per-member :func:`dropout_layer`: keep where ``u > p``, scale survivors by 1/(1-p); zeros at p = 1."""

    DRAWS = staticmethod(_inside_unit_interval)
    threshold: torch.Tensor

    def __init__(self, rates: Sequence[float], field: str = "rate") -> None:
        super().__init__(rates, field)
        _dropout_constants(self, self.rates)

    def perturb(self, h: torch.Tensor, generators: Generators) -> torch.Tensor:
        u = self.draw(h.shape[1:], generators, h.device)
        return h * ((u > self.threshold) * self.scale)


class PopulationDropoutConcise(PopulationDropout):
    """``dropout_concise`` in a population: the same masks as :class:`PopulationDropout` (same distribution
    as ``nn.Dropout``'s, which the CPU draws about 4x more slowly)."""

    name = "dropout_concise"


class PopulationGaussianNoise(PopulationNoise):
    """Per-member multiplicative Gaussian noise h * (1 + s * eps), s = sqrt(p / (1 - p))."""

    name = "gaussian"
    FILL = staticmethod(_normal)
    MEMBER_SCALE = staticmethod(lambda p: math.sqrt(p / (1.0 - p)))

    def perturb(self, h: torch.Tensor, generators: Generators) -> torch.Tensor:
        eps = self.draw(h.shape[1:], generators, h.device)
        return h * (1.0 + self.scale * eps)


class PopulationAdditiveGaussianNoise(PopulationGaussianNoise):
    """Per-member additive Gaussian noise h + sigma * eps (the rate is sigma, any value >= 0)."""

    name = "additive_gaussian"
    MEMBER_SCALE = staticmethod(lambda p: float(p))

    def perturb(self, h: torch.Tensor, generators: Generators) -> torch.Tensor:
        eps = self.draw(h.shape[1:], generators, h.device)
        return h + self.scale * eps


class PopulationUniformNoise(PopulationNoise):
    """Per-member uniform multiplicative noise h * u, u ~ U(1 - a, 1 + a), a = sqrt(3p / (1 - p))."""

    name = "uniform"
    MEMBER_SCALE = staticmethod(lambda p: math.sqrt(3.0 * p / (1.0 - p)))

    def perturb(self, h: torch.Tensor, generators: Generators) -> torch.Tensor:
        u = self.draw(h.shape[1:], generators, h.device)
        return h * (1.0 + self.scale * (2.0 * u - 1.0))


class PopulationGammaNoise(PopulationNoise):
    """Per-member Gamma multiplicative noise h * g, g ~ Gamma(k, k), k = (1 - p) / p."""

    name = "gamma"
    FILL = staticmethod(_gamma)
    FILL_VALUE = 1.0

    def perturb(self, h: torch.Tensor, generators: Generators) -> torch.Tensor:
        g = self.draw(h.shape[1:], generators, h.device)
        return h * g


class PopulationBlockDropout(PopulationNoise):
    """Per-member feature-group dropout: groups of ``group_size`` neighbouring units dropped together."""

    name = "block"
    DRAWS = staticmethod(_inside_unit_interval)
    threshold: torch.Tensor

    def __init__(self, rates: Sequence[float], field: str = "rate", group_size: int = 8) -> None:
        super().__init__(rates, field)
        self.group_size = technique(self.name).cls.check_params({"group_size": group_size})["group_size"]
        _dropout_constants(self, self.rates)

    def perturb(self, h: torch.Tensor, generators: Generators) -> torch.Tensor:
        width = h.shape[-1]
        groups = -(-width // self.group_size)
        u = self.draw((h.shape[1], groups), generators, h.device)
        mask = (u > self.threshold).repeat_interleave(self.group_size, dim=-1)[..., :width]
        return h * (mask * self.scale)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


class _DropConnectRates(_MemberRates):
    """DropConnect's per-member rates, mask thresholds, scales and draw buffers."""

    name = "dropconnect"
    threshold: torch.Tensor
    scale: torch.Tensor

    def __init__(self, rates: Sequence[float], field: str = "p") -> None:
        super().__init__(rates, field)
        _dropout_constants(self, self.rates)
        self.draws = MemberDraws(_uniform)


class StackedDropConnectLinear(StackedLinear):
    """Per-member :class:`~dropout_lab.models.noise.DropConnectLinear`: member ``k``'s weights are dropped
    with probability ``rates[k]`` (one mask per batch and member, from ``generators[k]``), scaled by 1/(1-p).

    Each mask is drawn in ``nn.Linear``'s ``[out, in]`` layout, the numbers ``DropConnectLinear``
    draws, and used transposed.
    """

    def __init__(self, num_inputs: int, num_outputs: int, generators: Generators, rates: Sequence[float],
                 field: str = "p") -> None:
        super().__init__(num_inputs, num_outputs, generators)
        self.noise = _DropConnectRates(rates, field)

    @property
    def rates(self) -> list[float]:
        return self.noise.rates

    def masked_weight(self, generators: Generators) -> torch.Tensor:
        """A fresh draw of ``W * M / (1-p)`` for every member."""
        _, num_inputs, num_outputs = self.weight.shape
        noise = self.noise
        u = noise.draws((num_outputs, num_inputs), noise.rates, noise.drawing, generators, self.weight.device)
        return self.weight * ((u.transpose(1, 2) > noise.threshold) * noise.scale)

    def forward(self, x: torch.Tensor, generators: Generators = ()) -> torch.Tensor:
        noisy = self.training and any(self.rates)
        return self.affine(x, self.masked_weight(generators) if noisy else self.weight)

    def keep(self, index: torch.Tensor) -> None:
        super().keep(index)
        self.noise.keep(index)


#: The population version of every activation technique of ``NOISE_TECHNIQUES``.
POPULATION_NOISE: dict[str, type[PopulationNoise]] = {
    cls.name: cls for cls in (PopulationDropout, PopulationDropoutConcise, PopulationGaussianNoise,
                              PopulationAdditiveGaussianNoise, PopulationUniformNoise, PopulationGammaNoise,
                              PopulationBlockDropout)
}


def make_population_noise(name: str, rates: Sequence[float], *, field: str = "rate", prefix: str = "",
                          **kwargs: Any) -> PopulationNoise:
    """Activation technique ``name`` with one rate per member; errors name the field as ``make_noise``'s do."""
    entry = technique(name, f"{prefix}noise")
    if name in WEIGHT_TECHNIQUES:
        raise InvalidValueError(f"{prefix}noise", name, "an activation technique; use StackedDropConnectLinear")
    params: Mapping[str, Any] = entry.cls.check_params(kwargs, prefix)
    return POPULATION_NOISE[name](rates, field, **params)
