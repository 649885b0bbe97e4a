"""Model selection on the validation split: each member's best-validation epoch and its weights, kept in memory.

Every run records, beside its last-epoch metrics (``final``), the metrics at its best-validation
epoch (``best``): ``epoch``, ``val_loss``, ``val_acc`` and the test metrics of the weights it had
then. That is early stopping's answer without stopping: the same run, selected on validation only.
Lightning's ``ModelCheckpoint`` keeps the best weights of one model in files; here each member of a
population has its own best epoch, and a chapter MLP's weights are about 1 MB, so they are kept in
memory: one copy of the net's state whose row ``k`` (a population) holds member ``k``'s best weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from dropout_lab.config.schema import METRICS


def selection_metric(metric: str) -> str:
    """The run's metric when it is a validation metric, else ``val_acc``."""
    return metric if metric in METRICS else "val_acc"


def improves(new: float, best: float | None, metric: str) -> bool:
    """True if ``new`` is strictly better than ``best`` (ties keep the earlier epoch)."""
    if best is None:
        return new == new  # not NaN
    return new > best if METRICS[metric] == "maximize" else new < best


def best_row(curves: list[dict[str, float]], metric: str) -> dict[str, float] | None:
    """The curve row of the best-validation epoch (the first of equals); None without validation rows."""
    best: dict[str, float] | None = None
    for row in curves:
        if metric in row and improves(row[metric], best[metric] if best else None, metric):
            best = row
    return best


def value_so_far(curves: list[dict[str, float]], column: str, metric: str) -> float | None:
    """``column`` of the run table as it stands after the epochs in ``curves``: for ``best_X``, ``X`` at the best
    epoch so far (selected on ``metric``, as ``best`` will be), else the last epoch's ``X``; None without it."""
    if column.startswith("best_"):
        row, name = best_row(curves, selection_metric(metric)), column.removeprefix("best_")
    else:
        row, name = (curves[-1] if curves else None), column
    return float(row[name]) if row is not None and name in row else None


def best_metrics(row: Mapping[str, float], tested: Mapping[str, float]) -> dict[str, float]:
    """The ``best`` block of a run record: the epoch, its validation metrics, the test metrics of its weights."""
    return {"epoch": int(row["epoch"]), "val_loss": row["val_loss"], "val_acc": row["val_acc"],
            "test_loss": float(tested["test_loss"]), "test_acc": float(tested["test_acc"])}


class BestWeights:
    """Each member's best ``metric`` on validation so far, its epoch, and its weights then.

    ``net`` is a single run's network (one member) or a stacked population (dimension 0 of every
    tensor of its state is the member); ``rows`` below are positions in its current stack.
    """

    def __init__(self, metric: str = "val_acc") -> None:
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r}: one of {sorted(METRICS)}")
        self.metric = metric
        self.values: dict[int, float] = {}
        self.epochs: dict[int, int] = {}
        self.state: dict[str, torch.Tensor] = {}

    def update(self, net: nn.Module, epoch: int, numbers: Sequence[int], values: Sequence[float | None]) -> None:
        """After an epoch: member ``numbers[row]`` (stack row ``row``) scored ``values[row]``; keep the weights of those
        that improved."""
        rows = [row for row, (number, value) in enumerate(zip(numbers, values, strict=True))
                if value is not None and improves(value, self.values.get(number), self.metric)]
        if not rows:
            return
        for row in rows:
            self.values[numbers[row]], self.epochs[numbers[row]] = float(values[row]), epoch  # type: ignore[arg-type]
        current = net.state_dict()
        if not self.state or len(rows) == len(numbers):
            self.state = {name: tensor.detach().clone() for name, tensor in current.items()}
            return
        index = torch.tensor(rows, dtype=torch.long, device=next(iter(current.values())).device)
        for name, tensor in current.items():
            self.state[name][index] = tensor.detach()[index]

    def keep(self, index: torch.Tensor) -> None:
        """Keep stack rows ``index`` (members left a population)."""
        self.state = {name: tensor.index_select(0, index) for name, tensor in self.state.items()}

    def restore(self, net: nn.Module) -> None:
        """Load every member's best weights into ``net`` (its last weights are overwritten)."""
        if not self.state:
            raise RuntimeError("no validation epoch was recorded")
        net.load_state_dict(self.state)
