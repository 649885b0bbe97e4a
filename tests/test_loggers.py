"""``logger=csv`` and ``logger=tensorboard`` write their files into the run's folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_csv_logger_writes_per_epoch_metrics(run_cli, tmp_path: Path) -> None:
    out = run_cli("train", "experiment=smoke", "trainer.max_epochs=2", "logger=csv", "hydra.run.dir=run")
    assert out.returncode == 0, out.stderr
    (metrics,) = (tmp_path / "run" / "csv").glob("version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    val = [r for r in rows if r.get("val_acc")]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [int(r["epoch"]) for r in val] == [0, 1]
    assert float(val[-1]["val_acc"]) == pytest.approx(record["curves"][-1]["val_acc"], abs=1e-6)
    assert any(r.get("train_loss") for r in rows)


@pytest.mark.slow
def test_tensorboard_logger_writes_event_scalars(run_cli, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = run_cli("train", "experiment=smoke", "logger=tensorboard", "hydra.run.dir=run")
    assert out.returncode == 0, out.stderr
    (version,) = (tmp_path / "run" / "tensorboard").glob("version_*")
    assert list(version.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(version)).Reload()  # every event file of the run
    assert {"val_acc", "val_loss", "train_loss", "test_acc"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("val_acc")) == 1  # one epoch
