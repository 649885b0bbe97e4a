"""Noise techniques for hidden layers, each unbiased (E[h'] = h) and active in training mode only.

Activation techniques are ``nn.Module``s applied to a hidden activation ``h``; ``dropconnect``
instead drops the weights of a hidden ``nn.Linear`` (:class:`DropConnectLinear`). Every
technique takes one ``rate``; :data:`NOISE_TECHNIQUES` names them all with a one-line rationale,
and :func:`make_noise` builds one with errors that name the config field and the allowed values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dropout_lab.errors import InvalidValueError
from dropout_lab.models.dropout import check_rate, dropout_layer

HALF_OPEN_INTERVAL = "a number in [0, 1)"


def _number(value: Any, field: str, allowed: str, ok: Callable[[float], bool]) -> float:
    """Return ``value`` as a float if it is a number for which ``ok`` holds, else raise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidValueError(field, value, allowed) from None
    if math.isnan(number) or not ok(number):
        raise InvalidValueError(field, value, allowed)
    return number


class _RateSpec:
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


class Noise(_RateSpec, nn.Module):
    """Base class: ``perturb`` runs in training mode when ``rate > 0``; otherwise ``h`` is returned."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = self.check_rate(rate)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return h
        return self.perturb(h)

    def perturb(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class Dropout(Noise):
    """The chapter's dropout from scratch: :func:`dropout_layer` (zero with prob. p, scale by 1/(1-p))."""

    def perturb(self, h: torch.Tensor) -> torch.Tensor:
        return dropout_layer(h, self.rate)


class DropoutConcise(Noise):
    """The chapter's concise dropout: a wrapped ``nn.Dropout`` (follows this module's train/eval mode)."""

    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.dropout = nn.Dropout(self.rate)

    def perturb(self, h: torch.Tensor) -> torch.Tensor:
        return self.dropout(h)


class GaussianNoise(Noise):
    """Multiplicative Gaussian noise h * (1 + s * eps), eps ~ N(0, 1), s = sqrt(p / (1 - p)).

    The multiplier has mean 1 and dropout's variance p/(1-p) (Srivastava et al. 2014, section 10),
    so rate p is comparable with dropout's; p = 1 would need infinite variance.
    """

    @classmethod
    def check_rate(cls, rate: Any, field: str = "rate") -> float:
        return _number(rate, field, HALF_OPEN_INTERVAL, lambda x: 0.0 <= x < 1.0)

    def perturb(self, h: torch.Tensor) -> torch.Tensor:
        std = math.sqrt(self.rate / (1.0 - self.rate))
        return h * (1.0 + std * torch.randn_like(h))


class AdditiveGaussianNoise(Noise):
    """Additive Gaussian noise h + sigma * eps with sigma = rate (the rate is the noise's std here).

    Bishop's training-with-input-noise idea (equivalent to Tikhonov regularization for small
    noise) moved inside the network. Unlike the multiplicative techniques the noise does not
    scale with h, so zero (inactive) ReLU units are perturbed too.
    """

    @classmethod
    def check_rate(cls, rate: Any, field: str = "rate") -> float:
        return _number(rate, field, "a finite number >= 0 (the noise's standard deviation)",
                       lambda x: 0.0 <= x < math.inf)

    def perturb(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.rate * torch.randn_like(h)


class UniformNoise(Noise):
    """Scaled uniform multiplicative noise h * u, u ~ U(1 - a, 1 + a), a = sqrt(3p / (1 - p)).

    Rationale: bounded noise with dropout's mean (1) and variance (a^2/3 = p/(1-p)) but no heavy
    tail and no zeroed units. The rate is limited to [0, 0.25] so that a <= 1: the multiplier stays
    >= 0 and never flips an activation's sign (for larger rates the variance cannot be matched).
    """

    MAX_RATE = 0.25

    @classmethod
    def check_rate(cls, rate: Any, field: str = "rate") -> float:
        return _number(rate, field, "a number in [0, 0.25] (so that the half-width "
                       "sqrt(3p/(1-p)) of the multiplier's range stays <= 1)",
                       lambda x: 0.0 <= x <= cls.MAX_RATE)

    def perturb(self, h: torch.Tensor) -> torch.Tensor:
        half_width = math.sqrt(3.0 * self.rate / (1.0 - self.rate))
        return h * (1.0 + half_width * (2.0 * torch.rand_like(h) - 1.0))


class GammaNoise(Noise):
    """Gamma multiplicative noise h * g, g ~ Gamma(shape k, rate k) with k = (1 - p) / p.

    Rationale: dropout's multiplier m/(1-p) is >= 0 with mean 1 and variance p/(1-p); g has the
    same support and first two moments (mean 1, variance 1/k = p/(1-p)) for every p in [0, 1),
    but is continuous: units are damped or boosted rather than silenced, and, unlike Gaussian
    noise, a sign is never flipped. p = 1 is refused (infinite variance).
    """

    @classmethod
    def check_rate(cls, rate: Any, field: str = "rate") -> float:
        return _number(rate, field, HALF_OPEN_INTERVAL, lambda x: 0.0 <= x < 1.0)

    def perturb(self, h: torch.Tensor) -> torch.Tensor:
        shape = torch.tensor((1.0 - self.rate) / self.rate, dtype=h.dtype, device=h.device)
        g = torch.distributions.Gamma(shape, shape).sample(h.shape)
        return h * g


class BlockDropout(Noise):
    """Feature-group dropout: units ``[i*g, (i+1)*g)`` (g = ``group_size``) are dropped together.

    Rationale: one Bernoulli draw per group per example removes g neighbouring units at once, so
    the next layer cannot rely on any fixed group of units (coarser co-adaptation than single units;
    n/g random numbers instead of n). Each unit is kept with probability 1 - p and survivors are
    scaled by 1/(1-p), so E[h'] = h exactly; ``group_size=1`` is ordinary dropout. A last group
    shorter than g (when g does not divide the width) is handled the same way.
    """

    PARAMS = {"group_size": "a positive integer"}

    def __init__(self, rate: float, group_size: int = 8) -> None:
        super().__init__(rate)
        self.group_size = self.check_params({"group_size": group_size})["group_size"]

    @classmethod
    def check_params(cls, params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        params = super().check_params(params, prefix)
        size = params.get("group_size", 8)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidValueError(f"{prefix}noise_kwargs.group_size", size, cls.PARAMS["group_size"])
        return params

    def perturb(self, h: torch.Tensor) -> torch.Tensor:
        if self.rate == 1.0:
            return torch.zeros_like(h)
        width = h.shape[-1]
        groups = -(-width // self.group_size)
        keep = torch.rand(*h.shape[:-1], groups, device=h.device) > self.rate
        mask = keep.repeat_interleave(self.group_size, dim=-1)[..., :width].to(h.dtype)
        return h * mask / (1.0 - self.rate)

    def extra_repr(self) -> str:
        return f"rate={self.rate}, group_size={self.group_size}"


class DropConnectLinear(_RateSpec, nn.Linear):
    """``nn.Linear`` whose weights are dropped in training: y = x (W * M / (1-p))^T + b, M ~ Bernoulli(1-p).

    Wan et al. (2013). E[W * M / (1-p)] = W, so the expected output is the plain layer's; the bias
    is not dropped, and eval mode uses the full weights.

    Masks are drawn **per batch**: one mask per forward pass, shared by all examples. Cost: one
    extra elementwise op (and in*out random numbers) on W per step, negligible next to the
    B*in*out matmul. Per-example masks (the paper's formulation) would need B masked copies of W
    (B*in*out random numbers and memory: ~205 MB for the 784x256 layer at B = 256) and a batched
    matmul over them, a memory-bound op much slower than one GEMM. The price of sharing is that
    the noise does not average out over the batch, so gradients are noisier.
    """

    def __init__(self, in_features: int, out_features: int, p: float = 0.5, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.p = self.check_rate(p, "p")

    def masked_weight(self) -> torch.Tensor:
        """A fresh draw of W * M / (1-p) (zeros for p = 1)."""
        if self.p == 0.0:
            return self.weight
        if self.p == 1.0:
            return torch.zeros_like(self.weight)
        keep = torch.rand_like(self.weight) > self.p
        return self.weight * keep.to(self.weight.dtype) / (1.0 - self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.masked_weight() if self.training else self.weight
        return F.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


class Technique(NamedTuple):
    """A registry entry: the class that implements a technique and why one would use it.

    ``rationale`` is the technique's row in the README's table of noise techniques (Markdown; a
    test keeps the two equal).
    """

    cls: type[Any]  # a Noise or DropConnectLinear subclass (check_rate, check_params)
    rationale: str


#: Every technique by config name; ``dropconnect`` acts on weights, all others on activations.
NOISE_TECHNIQUES: dict[str, Technique] = {
    "dropout": Technique(Dropout, "the chapter's `dropout_layer`: zero with prob. p, scale survivors by 1/(1-p)"),
    "dropout_concise": Technique(DropoutConcise, "the same with `nn.Dropout`"),
    "gaussian": Technique(GaussianNoise, "multiplicative N(1, p/(1-p)): dropout's mean and variance without "
                                         "zeros (Srivastava et al. 2014, sec. 10)"),
    "additive_gaussian": Technique(AdditiveGaussianNoise, "h + N(0, σ²) with **σ = the rate**: Bishop's input "
                                                          "noise moved inside the net"),
    "uniform": Technique(UniformNoise, "multiplicative U(1-a, 1+a), a = √(3p/(1-p)): bounded, variance-matched; "
                                       "p ≤ 0.25 keeps a ≤ 1, so no sign flips (the overlay sets 0.25)"),
    "gamma": Technique(GammaNoise, "multiplicative Gamma(k, k), k = (1-p)/p: dropout's support (≥ 0), mean and "
                                   "variance, but continuous: units are damped or boosted, never silenced"),
    "block": Technique(BlockDropout, "drops groups of `model.noise_kwargs.group_size` (default 8) neighbouring "
                                     "units together, scaled by 1/(1-p)"),
    "dropconnect": Technique(DropConnectLinear, "drops individual **weights** of `lin1`, `lin2` "
                                                "(`DropConnectLinear`), W·M/(1-p); no activation noise"),
}

#: Techniques that act on weights, not activations (``make_noise`` refuses them).
WEIGHT_TECHNIQUES = ("dropconnect",)


def technique(name: Any, field: str = "noise") -> Technique:
    """The registry entry for ``name``, or ``InvalidValueError`` listing the valid names."""
    if not isinstance(name, str) or name not in NOISE_TECHNIQUES:
        raise InvalidValueError(field, name, f"one of {', '.join(NOISE_TECHNIQUES)}")
    return NOISE_TECHNIQUES[name]


def make_noise(name: str, rate: float, *, field: str = "rate", prefix: str = "", **kwargs: Any) -> nn.Module:
    """Build activation technique ``name`` at ``rate`` with its ``kwargs`` (``noise_kwargs``).

    Errors name the config field: ``{prefix}noise`` for the name, ``field`` for the rate and
    ``{prefix}noise_kwargs.KEY`` for a parameter, with the allowed values.
    """
    entry = technique(name, f"{prefix}noise")
    if name in WEIGHT_TECHNIQUES:
        activation = ", ".join(n for n in NOISE_TECHNIQUES if n not in WEIGHT_TECHNIQUES)
        allowed = f"an activation technique ({activation}); {name} drops weights: use DropConnectLinear or NoisyMLP"
        raise InvalidValueError(f"{prefix}noise", name, allowed)
    rate = entry.cls.check_rate(rate, field)
    return entry.cls(rate, **entry.cls.check_params(kwargs, prefix))
