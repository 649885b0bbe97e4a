"""Collect run records from output folders into pandas tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dropout_lab.training.run_record import RECORD_NAME, RunRecord


def run_records_table(folder: str | Path) -> pd.DataFrame:
    """One row per ``run.json`` under ``folder``: model, rates, seed, status and final metrics."""
    rows = []
    for path in sorted(Path(folder).rglob(RECORD_NAME)):
        rec = RunRecord.read(path)
        model = rec.config["model"]
        rows.append({
            "run": str(path.parent.relative_to(folder)),
            "model": model["_target_"].rsplit(".", 1)[-1],
            "noise": model.get("noise") or "-",
            "dropout_1": model.get("dropout_1"),
            "dropout_2": model.get("dropout_2"),
            "epochs": rec.config["trainer"]["max_epochs"],
            "seed": rec.seed,
            "status": rec.status,
            **rec.final,
            "wall_time_s": round(rec.wall_time_s, 1),
        })
    return pd.DataFrame(rows)
