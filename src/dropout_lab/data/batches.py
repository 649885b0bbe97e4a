"""Mini-batches as index slices of tensors already in memory (no per-sample transforms).

Shuffled batches are gathered with ``torch.index_select``: the same values as ``X[idx]``, and on
this CPU 2-3x faster for a batch of 256 images (83 vs 142 us with 1 thread, 19 vs 55 us with 2),
since advanced indexing goes through a general gather kernel.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import torch

#: A batch index: a slice (in order) or an index tensor (shuffled).
Index = slice | torch.Tensor


def gather(X: torch.Tensor, idx: Index) -> torch.Tensor:
    """``X[idx]`` along the first dimension."""
    return X[idx] if isinstance(idx, slice) else torch.index_select(X, 0, idx)


def gathered(X: torch.Tensor, y: torch.Tensor, indices: Iterable[Index]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(X[idx], y[idx])`` batch of each index, one at a time."""
    for idx in indices:
        yield gather(X, idx), gather(y, idx)


class TensorBatches:
    """Iterable of ``(X[idx], y[idx])`` batches; a fresh seeded permutation each pass when shuffling."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False,
                 seed: int = 0) -> None:
        self.X = X
        self.y = y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed) if shuffle else None

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def indices(self) -> Iterator[Index]:
        """One pass's batch indices; draws the pass's permutation when shuffling."""
        n = len(self.y)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.y.device)
            for start in range(0, n, self.batch_size):
                yield order[start:start + self.batch_size]
        else:
            for start in range(0, n, self.batch_size):
                yield slice(start, start + self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return gathered(self.X, self.y, self.indices())


class BatchGroup:
    """Consecutive mini-batches handed to one ``training_step`` call; each is gathered when iterated.

    Deliberately not a list, tuple or dataclass: Lightning's batch utilities (device transfer,
    batch-size inference) leave it alone, and it holds indices, not copies of the images.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, indices: list[Index]) -> None:
        self.X = X
        self.y = y
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return gathered(self.X, self.y, self.indices)


class GroupedBatches:
    """The batches of ``batches`` in groups of ``size`` (the last group may be smaller), same order.

    Lightning's fit loop costs a few hundred microseconds per batch it sees (hooks, progress
    tracking, prefetching); handing it groups and stepping once per mini-batch inside
    ``training_step`` pays that once per group, like Keras' ``steps_per_execution``.
    """

    def __init__(self, batches: TensorBatches, size: int) -> None:
        self.batches = batches
        self.size = size

    def __len__(self) -> int:
        return -(-len(self.batches) // self.size)

    def __iter__(self) -> Iterator[BatchGroup]:
        indices = self.batches.indices()
        while group := list(itertools.islice(indices, self.size)):
            yield BatchGroup(self.batches.X, self.batches.y, group)
