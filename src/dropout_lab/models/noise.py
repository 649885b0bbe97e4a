"""Noise techniques for hidden layers, each unbiased (E[h'] = h) and active in training mode only.

Every technique is written once, for one run or for the K members of a population (``member_rates.py``):
``rates`` holds one rate per member, ``draw`` gives each member's random numbers from its own stream,
and ``perturb`` is the technique's formula on ``h`` of shape ``[K, batch, width]``, with the per-member
constants of its rate as ``[K, 1, 1]`` columns. A single run's ``[batch, width]`` is its ``[1, batch, width]``.

A member at rate 0 draws nothing and passes ``h`` through unchanged. Activation techniques are
``nn.Module``s applied to a hidden activation; ``dropconnect`` instead drops the weights of a hidden
linear layer (:class:`DropConnectLinear`, and its stacked version in ``models/stacked.py``).
:data:`NOISE_TECHNIQUES` names them all with a one-line rationale, and :func:`make_noise` builds one
with errors that name the config field and the allowed values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dropout_lab.errors import InvalidValueError
from dropout_lab.models.member_rates import (
    GAMMA,
    HALF_OPEN_INTERVAL,
    NORMAL,
    ONE_RUN,
    KeepRates,
    MemberRates,
    RateSpec,
    Source,
    number,
)

# ---------------------------------------------------------------------------------------------
# Activation techniques
# ---------------------------------------------------------------------------------------------

class Noise(MemberRates):
    """Base class: ``perturb`` runs in training mode when some rate is above 0; otherwise ``h`` is returned.

    A single run calls it as ``noise(h)``, drawing from the global RNG, with ``h`` of any shape (its
    ``[batch, width]`` is member 0 of ``[1, batch, width]``); a population passes ``h`` of shape
    ``[K, batch, width]`` and its members' :class:`~dropout_lab.models.counter_rng.MemberStreams`.
    """

    def forward(self, h: torch.Tensor, source: Source = ONE_RUN) -> torch.Tensor:
        if not self.training or not any(self.rates):
            return h
        if source is ONE_RUN:
            return self.perturb(h.unsqueeze(0), source).squeeze(0)
        return self.perturb(h, source).to(h.dtype)  # float32 draws must not widen a bf16 population

    def perturb(self, h: torch.Tensor, source: Source) -> torch.Tensor:
        raise NotImplementedError


class Dropout(KeepRates, Noise):
    """The chapter's dropout: zero with probability p, scale survivors by 1/(1-p) (as ``dropout_layer``)."""

    def perturb(self, h: torch.Tensor, source: Source) -> torch.Tensor:
        return self.kept(h, source)


class DropoutConcise(Dropout):
    """The chapter's concise dropout: ``nn.Dropout``'s sampler for a single run.

    ``nn.Dropout`` cannot draw from a member's own stream, so in a population the members draw
    :class:`Dropout`'s masks, which have the same distribution.
    """

    def forward(self, h: torch.Tensor, source: Source = ONE_RUN) -> torch.Tensor:
        if source is ONE_RUN:
            return F.dropout(h, self.rate, self.training)
        return super().forward(h, source)


class GaussianNoise(Noise):
    """Multiplicative Gaussian noise h * (1 + s * eps), eps ~ N(0, 1), s = sqrt(p / (1 - p)).

    The multiplier has mean 1 and dropout's variance p/(1-p) (Srivastava et al. 2014, section 10),
    so rate p is comparable with dropout's; p = 1 would need infinite variance.
    """

    FILL = NORMAL
    CONSTANTS = {"scale": lambda p: math.sqrt(p / (1.0 - p))}
    scale: torch.Tensor

    @classmethod
    def check_rate(cls, rate: Any, field: str = "rate") -> float:
        return number(rate, field, HALF_OPEN_INTERVAL, lambda x: 0.0 <= x < 1.0)

    def perturb(self, h: torch.Tensor, source: Source) -> torch.Tensor:
        return h * (1.0 + self.scale * self.draw(h.shape[1:], source, h.device))


class AdditiveGaussianNoise(Noise):
    """Additive Gaussian noise h + sigma * eps with sigma = rate (the rate is the noise's std here).

    Bishop's training-with-input-noise idea (equivalent to Tikhonov regularization for small
    noise) moved inside the network. Unlike the multiplicative techniques the noise does not
    scale with h, so zero (inactive) ReLU units are perturbed too.
    """

    FILL = NORMAL
    CONSTANTS = {"scale": float}
    scale: torch.Tensor

    @classmethod
    def check_rate(cls, rate: Any, field: str = "rate") -> float:
        return number(rate, field, "a finite number >= 0 (the noise's standard deviation)",
                       lambda x: 0.0 <= x < math.inf)

    def perturb(self, h: torch.Tensor, source: Source) -> torch.Tensor:
        return h + self.scale * self.draw(h.shape[1:], source, h.device)


class UniformNoise(Noise):
    """Scaled uniform multiplicative noise h * u, u ~ U(1 - a, 1 + a), a = sqrt(3p / (1 - p)).

    Rationale: bounded noise with dropout's mean (1) and variance (a^2/3 = p/(1-p)) but no heavy
    tail and no zeroed units. The rate is limited to [0, 0.25] so that a <= 1: the multiplier stays
    >= 0 and never flips an activation's sign (for larger rates the variance cannot be matched).
    """

    MAX_RATE = 0.25
    CONSTANTS = {"half_width": lambda p: math.sqrt(3.0 * p / (1.0 - p))}
    half_width: torch.Tensor

    @classmethod
    def check_rate(cls, rate: Any, field: str = "rate") -> float:
        return number(rate, field, "a number in [0, 0.25] (so that the half-width "
                       "sqrt(3p/(1-p)) of the multiplier's range stays <= 1)",
                       lambda x: 0.0 <= x <= cls.MAX_RATE)

    def perturb(self, h: torch.Tensor, source: Source) -> torch.Tensor:
        u = self.draw(h.shape[1:], source, h.device)
        return h * (1.0 + self.half_width * (2.0 * u - 1.0))


class GammaNoise(Noise):
    """Gamma multiplicative noise h * g, g ~ Gamma(shape k, rate k) with k = (1 - p) / p.

    Rationale: dropout's multiplier m/(1-p) is >= 0 with mean 1 and variance p/(1-p); g has the
    same support and first two moments (mean 1, variance 1/k = p/(1-p)) for every p in [0, 1),
    but is continuous: units are damped or boosted rather than silenced, and, unlike Gaussian
    noise, a sign is never flipped. p = 1 is refused (infinite variance).
    """

    FILL = GAMMA
    FILL_VALUE = 1.0

    @classmethod
    def check_rate(cls, rate: Any, field: str = "rate") -> float:
        return number(rate, field, HALF_OPEN_INTERVAL, lambda x: 0.0 <= x < 1.0)

    def perturb(self, h: torch.Tensor, source: Source) -> torch.Tensor:
        return h * self.draw(h.shape[1:], source, h.device)


class BlockDropout(KeepRates, Noise):
    """Feature-group dropout: units ``[i*g, (i+1)*g)`` (g = ``group_size``) are dropped together.

    Rationale: one Bernoulli draw per group per example removes g neighbouring units at once, so
    the next layer cannot rely on any fixed group of units (coarser co-adaptation than single units;
    n/g random numbers instead of n). Each unit is kept with probability 1 - p and survivors are
    scaled by 1/(1-p), so E[h'] = h exactly; ``group_size=1`` is ordinary dropout. A last group
    shorter than g (when g does not divide the width) is handled the same way.
    """

    PARAMS = {"group_size": "a positive integer"}

    def __init__(self, rate: float | Sequence[float], field: str = "rate", group_size: int = 8) -> None:
        super().__init__(rate, field)
        self.group_size = self.check_params({"group_size": group_size})["group_size"]

    @classmethod
    def check_params(cls, params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        params = super().check_params(params, prefix)
        size = params.get("group_size", 8)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidValueError(f"{prefix}noise_kwargs.group_size", size, cls.PARAMS["group_size"])
        return params

    def perturb(self, h: torch.Tensor, source: Source) -> torch.Tensor:
        return self.kept(h, source, self.group_size)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


# ---------------------------------------------------------------------------------------------
# DropConnect: noise on weights
# ---------------------------------------------------------------------------------------------

class DropConnectRates(KeepRates):
    """DropConnect's per-member rates: a weight is kept where ``u > p`` and scaled by 1/(1-p), as a unit by dropout."""

    def masked(self, weight: torch.Tensor, source: Source) -> torch.Tensor:
        """A fresh draw of ``W * M / (1-p)`` for every member; ``weight`` is ``[K, out, in]``."""
        return self.kept(weight, source)


class DropConnectLinear(RateSpec, nn.Linear):
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
        self.noise = DropConnectRates(p, "p")

    @property
    def p(self) -> float:
        return self.noise.rate

    def masked_weight(self) -> torch.Tensor:
        """A fresh draw of W * M / (1-p) (zeros for p = 1)."""
        if self.p == 0.0:
            return self.weight
        return self.noise.masked(self.weight.unsqueeze(0), ONE_RUN).squeeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.masked_weight() if self.training else self.weight
        return F.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

class Technique(NamedTuple):
    """A registry entry: the class that implements a technique and why one would use it.

    ``rationale`` is the technique's row in the documentation's table of noise techniques
    (Markdown; a test keeps the two equal).
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


def make_noise(name: str, rate: float | Sequence[float], *, field: str = "rate", prefix: str = "",
               **kwargs: Any) -> Noise:
    """Build activation technique ``name`` at ``rate`` (one run) or at one rate per member, with its
    ``kwargs`` (``noise_kwargs``).

    Errors name the config field: ``{prefix}noise`` for the name, ``field`` for a rate and
    ``{prefix}noise_kwargs.KEY`` for a parameter, with the allowed values.
    """
    entry = technique(name, f"{prefix}noise")
    if name in WEIGHT_TECHNIQUES:
        activation = ", ".join(n for n in NOISE_TECHNIQUES if n not in WEIGHT_TECHNIQUES)
        allowed = f"an activation technique ({activation}); {name} drops weights: use DropConnectLinear or NoisyMLP"
        raise InvalidValueError(f"{prefix}noise", name, allowed)
    return entry.cls(rate, field, **entry.cls.check_params(kwargs, prefix))
