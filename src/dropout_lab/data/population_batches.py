"""Training batches for a population: each member's own shuffle, all members gathered in one ``index_select``.

Member ``k`` shuffles with its own generator, seeded with its own ``shuffle_seed``, exactly as
:class:`~dropout_lab.data.batches.TensorBatches` does for a single run: the same permutation each
pass, whatever the other members are. Step ``j`` of a pass takes the ``j``-th slice of every
member's permutation and gathers the ``K`` batches with one ``torch.index_select`` on the
in-memory tensors, as ``[K, batch, 784]`` images and ``[K, batch]`` labels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from dropout_lab.data.datamodule import FashionMNISTDataModule


class PopulationBatches:
    """Per-member shuffled mini-batches of ``(X, y)``, handed out in groups of ``steps_per_call`` steps.

    Iterating starts a pass: every member draws its permutation (on the CPU, as ``TensorBatches``
    does) and the pass yields :class:`PopulationBatchGroup`s of step numbers; the batches are
    gathered when a group is iterated, from the members present then (see :meth:`keep`).
    ``dtype`` (e.g. ``torch.bfloat16`` under bf16 autocast, which casts the images to it anyway)
    stores the images in that type once, so each gather moves fewer bytes.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle_seeds: Sequence[int],
                 steps_per_call: int = 1, dtype: torch.dtype | None = None) -> None:
        self.X = X.reshape(len(X), -1).to(dtype or X.dtype)
        self.y = y
        self.batch_size = batch_size
        self.steps_per_call = steps_per_call
        self.generators = [torch.Generator().manual_seed(seed) for seed in shuffle_seeds]
        self.orders = torch.empty(len(self.generators), 0, dtype=torch.long, device=y.device)

    @property
    def steps(self) -> int:
        """Mini-batches (optimizer steps) per pass."""
        return -(-len(self.y) // self.batch_size)

    def __len__(self) -> int:
        return -(-self.steps // self.steps_per_call)

    def __iter__(self) -> Iterator[PopulationBatchGroup]:
        n = len(self.y)
        self.orders = torch.stack([torch.randperm(n, generator=g) for g in self.generators]).to(self.y.device)
        for first in range(0, self.steps, self.steps_per_call):
            yield PopulationBatchGroup(self, range(first, min(first + self.steps_per_call, self.steps)))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``step``'s images ``[K, b, 784]`` and labels ``[K, b]`` of every present member."""
        start = step * self.batch_size
        idx = self.orders[:, start:start + self.batch_size]
        flat = idx.reshape(-1)
        K, b = idx.shape
        return torch.index_select(self.X, 0, flat).view(K, b, -1), torch.index_select(self.y, 0, flat).view(K, b)

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at positions ``index`` (in that order), from the next gathered batch on."""
        self.generators = [self.generators[i] for i in index.tolist()]
        self.orders = self.orders.index_select(0, index.to(self.orders.device))


class PopulationBatchGroup:
    """Consecutive steps handed to one ``training_step`` call; each step is gathered when iterated.

    Not a list or tuple, so that Lightning's batch utilities leave it alone (as ``BatchGroup``).
    """

    def __init__(self, source: PopulationBatches, steps: range) -> None:
        self.source = source
        self.steps = steps

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return (self.source.batch(step) for step in self.steps)


class PopulationDataModule(FashionMNISTDataModule):
    """:class:`FashionMNISTDataModule` whose training batches are a population's (one shuffle seed per member).

    Validation and test batches are the single run's: every member sees the same images.
    ``train_dtype`` is the training images' type in the gathered batches (see ``PopulationBatches``).
    """

    def __init__(self, shuffle_seeds: Sequence[int], train_dtype: torch.dtype | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shuffle_seeds = list(shuffle_seeds)
        self.train_dtype = train_dtype

    def train_dataloader(self) -> PopulationBatches:  # type: ignore[override]  # population batches, by design
        X, y = self.splits["train"]
        return PopulationBatches(X, y, self.batch_size, self.shuffle_seeds, self.batches_per_call, self.train_dtype)
