"""K independent networks computed as one: the building blocks of a fused population.

Member ``k`` of a :class:`StackedLinear` is an ``nn.Linear(in, out)`` whose weight is stored
transposed as ``weight[k]`` (``[in, out]``) so that the forward pass is one batched matmul,
``torch.baddbmm(bias, x, weight)`` over ``x`` of shape ``[K, batch, in]``. Nothing mixes members:
member ``k``'s output and gradients depend on member ``k``'s inputs and parameters only.
:class:`StackedMLP` is K of the chapter's MLPs with a noise technique of ``models/noise.py``.

Layers compute in their input's dtype: a bf16 population casts its float32 (master) weights to
bfloat16 once per forward pass, and its activations stay bfloat16 (no per-operation casts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dropout_lab.models.counter_rng import MemberStreams
from dropout_lab.models.member_rates import keep_members
from dropout_lab.models.mlp import IMAGE_PIXELS, check_width
from dropout_lab.models.noise import WEIGHT_TECHNIQUES, DropConnectRates, Noise, make_noise, technique

#: The numeric modes of a population's forward pass.
COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def init_linear(num_inputs: int, num_outputs: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The initial ``(weight [out, in], bias [out])`` of ``nn.Linear(num_inputs, num_outputs)`` from ``generator``.

    The same calls as ``nn.Linear.reset_parameters``: a generator seeded like the global RNG gives
    the same numbers as ``nn.Linear`` built after ``torch.manual_seed``.
    """
    weight = torch.empty(num_outputs, num_inputs)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(num_inputs) if num_inputs > 0 else 0.0
    bias = torch.empty(num_outputs).uniform_(-bound, bound, generator=generator)
    return weight, bias


class StackedLinear(nn.Module):
    """``K`` independent ``nn.Linear(in, out)`` layers: ``weight`` is ``[K, in, out]``, ``bias`` is ``[K, 1, out]``.

    ``forward`` takes ``x`` of shape ``[K, batch, in]`` (one batch per member) or ``[batch, in]``
    (the same batch for every member, as in evaluation) and returns ``[K, batch, out]``. Member
    ``k`` is initialised from ``generators[k]`` exactly as ``nn.Linear`` would be.
    """

    def __init__(self, num_inputs: int, num_outputs: int, generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        weights, biases = zip(*(init_linear(num_inputs, num_outputs, g) for g in generators))
        self.weight = nn.Parameter(torch.stack([w.t() for w in weights]).contiguous())
        self.bias = nn.Parameter(torch.stack(biases).unsqueeze(1))

    def forward(self, x: torch.Tensor, streams: MemberStreams | None = None) -> torch.Tensor:
        """``x @ weight[k] + bias[k]`` for every member ``k``, in ``x``'s dtype (``streams``: for noisy layers)."""
        return self.affine(x, self.weight.to(x.dtype))

    def affine(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x @ weight[k] + bias[k]`` for every member ``k``, with ``weight`` ``[K, in, out]`` in ``x``'s dtype."""
        if x.dim() == 2:
            x = x.expand(weight.shape[0], *x.shape)
        return torch.baddbmm(self.bias.to(x.dtype), x, weight)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at positions ``index`` (in that order); their values are unchanged."""
        keep_members(self, index)

    def extra_repr(self) -> str:
        K, num_inputs, num_outputs = self.weight.shape
        return f"size={K}, in_features={num_inputs}, out_features={num_outputs}"


class StackedDropConnectLinear(StackedLinear):
    """Per-member :class:`~dropout_lab.models.noise.DropConnectLinear`: member ``k``'s weights are dropped
    with probability ``rates[k]`` (one mask per batch and member, from its stream), scaled by 1/(1-p).

    Each mask is drawn in ``nn.Linear``'s ``[out, in]`` layout and used transposed.
    """

    def __init__(self, num_inputs: int, num_outputs: int, generators: Sequence[torch.Generator],
                 rates: Sequence[float], field: str = "p") -> None:
        super().__init__(num_inputs, num_outputs, generators)
        self.noise = DropConnectRates(rates, field)

    def forward(self, x: torch.Tensor, streams: MemberStreams | None = None) -> torch.Tensor:
        weight = self.weight.to(x.dtype)
        if not (self.training and any(self.noise.rates)):
            return self.affine(x, weight)
        if streams is None:
            raise ValueError("a training StackedDropConnectLinear needs its members' MemberStreams")
        return self.affine(x, self.noise.masked(weight.transpose(1, 2), streams).transpose(1, 2))

    def keep(self, index: torch.Tensor) -> None:
        super().keep(index)
        self.noise.keep(index)


class StackedMLP(nn.Module):
    """``K`` independent 784-h1-h2-out ReLU MLPs with technique ``noise`` after hidden layer k.

    Member ``k`` is initialised as ``NoisyMLP`` (or either chapter net) is after
    ``torch.manual_seed(seeds[k])``, has its own rates ``dropout_1[k]``, ``dropout_2[k]``, and draws
    its noise from its counter-based stream ``self.streams`` (keyed by ``seeds[k]``, advanced once per
    training forward pass; move it with the net: ``streams.to(device)``). Layers and noise modules
    have ``NoisyMLP``'s names. ``forward`` maps ``[K, batch, ...]`` images (one batch per member) or
    ``[batch, ...]`` (one batch for all) to ``[K, batch, out]`` logits in ``compute_dtype``
    (``fp32``, or ``bf16``: bfloat16 matmuls and activations, float32 weights).
    """

    def __init__(
        self,
        seeds: Sequence[int],
        dropout_1: Sequence[float],
        dropout_2: Sequence[float],
        num_hiddens_1: int = 256,
        num_hiddens_2: int = 256,
        num_outputs: int = 10,
        noise: str = "dropout",
        noise_kwargs: Mapping[str, Any] | None = None,
        num_inputs: int = IMAGE_PIXELS,
        compute_dtype: str = "fp32",
    ) -> None:
        super().__init__()
        technique(noise, "model.noise")
        self.compute_dtype = COMPUTE_DTYPES[compute_dtype]
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        self.noise = noise
        kwargs = dict(noise_kwargs or {})
        widths = (check_width(num_hiddens_1, "model.num_hiddens_1"),
                  check_width(num_hiddens_2, "model.num_hiddens_2"),
                  check_width(num_outputs, "model.num_outputs"))
        self.num_inputs = num_inputs
        self.noise1: Noise | None = None
        self.noise2: Noise | None = None
        if noise in WEIGHT_TECHNIQUES:
            technique(noise).cls.check_params(kwargs, "model.")
            self.lin1: StackedLinear = StackedDropConnectLinear(num_inputs, widths[0], generators, dropout_1,
                                                                "model.dropout_1")
            self.lin2: StackedLinear = StackedDropConnectLinear(widths[0], widths[1], generators, dropout_2,
                                                                "model.dropout_2")
        else:
            self.noise1 = make_noise(noise, dropout_1, field="model.dropout_1", prefix="model.", **kwargs)
            self.noise2 = make_noise(noise, dropout_2, field="model.dropout_2", prefix="model.", **kwargs)
            self.lin1 = StackedLinear(num_inputs, widths[0], generators)
            self.lin2 = StackedLinear(widths[0], widths[1], generators)
        self.lin3 = StackedLinear(widths[1], widths[2], generators)
        for slot, rates in enumerate((self.noise1, self.noise2, getattr(self.lin1, "noise", None),
                                      getattr(self.lin2, "noise", None))):
            if rates is not None:
                rates.slot = slot
        self.streams = MemberStreams(seeds)

    @property
    def size(self) -> int:
        """K, the members still in the stack."""
        return self.lin3.weight.shape[0]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        streams = self.streams
        if self.training:
            streams.advance()
        if X.shape[-1] != self.num_inputs:  # images: flatten [..., 1, 28, 28] to [..., 784]
            X = X.flatten(-3)
        X = X.to(self.compute_dtype)
        H1 = torch.relu(self.lin1(X, streams))
        if self.noise1 is not None:
            H1 = self.noise1(H1, streams)
        H2 = torch.relu(self.lin2(H1, streams))
        if self.noise2 is not None:
            H2 = self.noise2(H2, streams)
        return self.lin3(H2)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at positions ``index`` (in that order), with their streams."""
        for layer in (self.lin1, self.lin2, self.lin3):
            layer.keep(index)
        for noise in (self.noise1, self.noise2):
            if noise is not None:
                noise.keep(index)
        self.streams.keep(index)

    def extra_repr(self) -> str:
        dtype = next(name for name, value in COMPUTE_DTYPES.items() if value == self.compute_dtype)
        return f"size={self.size}, noise={self.noise!r}, compute={dtype}"
