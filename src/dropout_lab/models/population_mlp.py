"""K of the chapter's MLPs trained as one network: :class:`NoisyMLP` with a member dimension."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dropout_lab.models.mlp import IMAGE_PIXELS, _check_width
from dropout_lab.models.noise import WEIGHT_TECHNIQUES, technique
from dropout_lab.models.population_noise import PopulationNoise, StackedDropConnectLinear, make_population_noise
from dropout_lab.models.stacked import StackedLinear


class StackedMLP(nn.Module):
    """``K`` independent 784-h1-h2-out ReLU MLPs with technique ``noise`` after hidden layer k.

    Member ``k`` is initialised from ``generators[k]`` as ``NoisyMLP`` (or either chapter net) is
    after ``torch.manual_seed``, has its own rates ``dropout_1[k]``, ``dropout_2[k]``, and draws its
    noise from ``self.generators[k]`` (set them before training; see ``PopulationClassifier``).
    Layers and noise modules have ``NoisyMLP``'s names. ``forward`` maps ``[K, batch, ...]`` images
    (one batch per member) or ``[batch, ...]`` (one batch for all) to ``[K, batch, out]`` logits.
    """

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        dropout_1: Sequence[float],
        dropout_2: Sequence[float],
        num_hiddens_1: int = 256,
        num_hiddens_2: int = 256,
        num_outputs: int = 10,
        noise: str = "dropout",
        noise_kwargs: Mapping[str, Any] | None = None,
        num_inputs: int = IMAGE_PIXELS,
    ) -> None:
        super().__init__()
        technique(noise, "model.noise")
        self.noise = noise
        kwargs = dict(noise_kwargs or {})
        widths = (_check_width(num_hiddens_1, "model.num_hiddens_1"),
                  _check_width(num_hiddens_2, "model.num_hiddens_2"),
                  _check_width(num_outputs, "model.num_outputs"))
        self.num_inputs = num_inputs
        if noise in WEIGHT_TECHNIQUES:
            technique(noise).cls.check_params(kwargs, "model.")
            self.lin1: StackedLinear = StackedDropConnectLinear(num_inputs, widths[0], generators, dropout_1,
                                                                "model.dropout_1")
            self.lin2: StackedLinear = StackedDropConnectLinear(widths[0], widths[1], generators, dropout_2,
                                                                "model.dropout_2")
            self.noise1: PopulationNoise | None = None
            self.noise2: PopulationNoise | None = None
        else:
            self.noise1 = make_population_noise(noise, dropout_1, field="model.dropout_1", prefix="model.", **kwargs)
            self.noise2 = make_population_noise(noise, dropout_2, field="model.dropout_2", prefix="model.", **kwargs)
            self.lin1 = StackedLinear(num_inputs, widths[0], generators)
            self.lin2 = StackedLinear(widths[0], widths[1], generators)
        self.lin3 = StackedLinear(widths[1], widths[2], generators)
        self.generators: list[torch.Generator] = list(generators)

    @property
    def members(self) -> int:
        return self.lin3.weight.shape[0]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        gens = self.generators
        if X.shape[-1] != self.num_inputs:  # images: flatten [..., 1, 28, 28] to [..., 784]
            X = X.flatten(-3)
        H1 = torch.relu(self.lin1(X, gens))
        if self.noise1 is not None:
            H1 = self.noise1(H1, gens)
        H2 = torch.relu(self.lin2(H1, gens))
        if self.noise2 is not None:
            H2 = self.noise2(H2, gens)
        return self.lin3(H2)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at positions ``index`` (in that order), with their generators."""
        for layer in (self.lin1, self.lin2, self.lin3):
            layer.keep(index)
        for noise in (self.noise1, self.noise2):
            if noise is not None:
                noise.keep(index)
        self.generators = [self.generators[i] for i in index.tolist()]

    def extra_repr(self) -> str:
        return f"members={self.members}, noise={self.noise!r}"
