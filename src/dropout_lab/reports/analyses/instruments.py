"""Shared helpers of the instrument analyses (variance, test_time, dropconnect): their tidy tables.

Their statistics (intervals, paired tests, Holm) are in :mod:`dropout_lab.analysis.stats`, their sentence
fragments in :mod:`dropout_lab.reports.wording`.
"""

from __future__ import annotations

import pandas as pd

from dropout_lab.reports.inputs import StudyData


def config_labels(data: StudyData) -> pd.Series:
    """A configuration label per finished run (indexed like ``data.runs``): the value for one grid key."""
    if len(data.keys) == 1 and not pd.api.types.is_numeric_dtype(data.runs[data.keys[0]]):
        return data.runs[data.keys[0]].astype(str)
    return data.label()


def instrument_rows(data: StudyData, name: str) -> pd.DataFrame:
    """The tidy rows of instrument ``name`` of every finished run, with trial, seed and configuration columns."""
    rows = data.instrument(name)
    if rows.empty or data.runs.empty:
        return pd.DataFrame()
    runs = data.runs[["trial", "seed"]].assign(configuration=config_labels(data).to_numpy())
    return rows.drop(columns=["seed"], errors="ignore").merge(runs, on="trial", how="inner")
