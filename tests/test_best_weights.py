"""Selection on validation: each run records its best-validation epoch and the test metrics of the weights it had
then, in both engines; those are the test metrics of the same run stopped at that epoch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from dropout_lab.training.best_weights import best_row, improves
from dropout_lab.training.population import train_population
from dropout_lab.training.train import train

#: At this learning rate the smoke run's validation accuracy peaks at epoch 3 of 4 (0.475, then 0.36).
UNSTABLE = ("model=scratch", "optim.lr=0.9", "optuna.record=false")


def test_improves_and_best_row_keep_the_first_of_equals() -> None:
    curves = [{"epoch": 1, "val_acc": 0.5, "val_loss": 1.0}, {"epoch": 2, "val_acc": 0.7, "val_loss": 0.9},
              {"epoch": 3, "val_acc": 0.7, "val_loss": 0.8}]
    assert best_row(curves, "val_acc")["epoch"] == 2
    assert best_row(curves, "val_loss")["epoch"] == 3
    assert not improves(float("nan"), None, "val_acc") and improves(0.1, None, "val_acc")


def test_a_run_records_its_best_epoch_tested_on_that_epochs_weights(
        make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    long = train(make_cfg(*UNSTABLE, "trainer.max_epochs=4"), tmp_path / "long")
    row = best_row(long.curves, "val_acc")
    assert row is not None and row["epoch"] < 4  # else this test checks nothing: pick another lr
    assert long.best["epoch"] == row["epoch"] and long.best["val_acc"] == row["val_acc"]
    assert long.best["test_acc"] != long.final["test_acc"]
    stopped = train(make_cfg(*UNSTABLE, f"trainer.max_epochs={row['epoch']}"), tmp_path / "stopped")
    assert long.best["test_acc"] == pytest.approx(stopped.final["test_acc"], abs=1e-6)
    assert long.best["test_loss"] == pytest.approx(stopped.final["test_loss"], abs=1e-5)
    assert stopped.best == {"epoch": row["epoch"], **{k: stopped.final[k] for k in stopped.final}}


def test_population_members_record_their_own_best_epochs(make_cfg: Callable[..., DictConfig]) -> None:
    """An unstable member (best epoch 3 of 4) beside a steady one (lr 0.1): each is selected on its own curve,
    and the unstable one's best test metrics are those of the same member stopped at its best epoch."""
    unstable, steady = make_cfg(*UNSTABLE, "trainer.max_epochs=4"), make_cfg(
        "model=scratch", "optim.lr=0.1", "seed=1", "optuna.record=false", "trainer.max_epochs=4")
    first, second = train_population([unstable, steady])
    for member in (first, second):
        row = best_row(member["curves"], "val_acc")
        assert member["best"]["epoch"] == row["epoch"] and member["best"]["val_acc"] == row["val_acc"]
    assert first["best"]["epoch"] < 4
    (stopped,) = train_population([make_cfg(*UNSTABLE, f"trainer.max_epochs={first['best']['epoch']}")])
    assert first["best"]["test_acc"] == pytest.approx(stopped["final"]["test_acc"], abs=1e-6)
    if second["best"]["epoch"] == 4:
        assert second["best"]["test_acc"] == second["final"]["test_acc"]
