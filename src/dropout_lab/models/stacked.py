"""K independent linear layers computed as one: the building block of a fused population.

Member ``k`` of a :class:`StackedLinear` is an ``nn.Linear(in, out)`` whose weight is stored
transposed as ``weight[k]`` (``[in, out]``) so that the forward pass is one batched matmul,
``torch.baddbmm(bias, x, weight)`` over ``x`` of shape ``[K, batch, in]``. Nothing mixes members:
member ``k``'s output and gradients depend on member ``k``'s inputs and parameters only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


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

    def forward(self, x: torch.Tensor, generators: Sequence[torch.Generator] = ()) -> torch.Tensor:
        """``x @ weight[k] + bias[k]`` for every member ``k`` (``generators`` is for noisy subclasses)."""
        return self.affine(x, self.weight)

    def affine(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x @ weight[k] + bias[k]`` for every member ``k``, with ``weight`` ``[K, in, out]``."""
        if x.dim() == 2:
            x = x.expand(weight.shape[0], *x.shape)
        return torch.baddbmm(self.bias, x, weight)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at positions ``index`` (in that order); their values are unchanged."""
        keep_members(self, index)

    def extra_repr(self) -> str:
        K, num_inputs, num_outputs = self.weight.shape
        return f"members={K}, in_features={num_inputs}, out_features={num_outputs}"
