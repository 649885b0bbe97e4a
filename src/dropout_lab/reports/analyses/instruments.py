"""Shared helpers of the instrument analyses (variance, test_time, dropconnect): tidy tables and paired tests."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from dropout_lab.reports import stats as aggregate
from dropout_lab.reports.figures import t_errorbar
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.stats import holm, significance, t_interval


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


def geometric_mean(values: Sequence[float]) -> float:
    """exp(mean(log x)): the centre of a positive quantity compared as ratios."""
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=float)))))


def log_t_band(values: Sequence[float]) -> tuple[float, float]:
    """95% t-interval of the geometric mean (computed on log values), for seaborn's ``errorbar=``."""
    low, high = t_errorbar(np.log(np.asarray(values, dtype=float)))
    return float(np.exp(low)), float(np.exp(high))


def interval(values: Sequence[float]) -> tuple[float, float]:
    """95% t-interval of the mean: NaN below two values, zero width when all values are equal."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return np.nan, np.nan
    return (float(x[0]), float(x[0])) if np.ptp(x) == 0 else t_interval(x)


def summarize_metrics(frame: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean and 95% t-interval over seeds of each metric: columns ``<metric>_mean/_ci_low/_ci_high`` and n."""
    grouped = frame.groupby(list(by), dropna=False)
    table = grouped.size().rename("n").reset_index()[list(by)]
    for metric in metrics:
        bounds = grouped[metric].apply(interval)
        table[f"{metric}_mean"] = grouped[metric].mean().to_numpy()
        table[f"{metric}_ci_low"] = [low for low, _ in bounds]
        table[f"{metric}_ci_high"] = [high for _, high in bounds]
    table["n"] = grouped[metrics[0]].count().to_numpy()
    return table


def paired_differences(runs: pd.DataFrame, by: Sequence[str], metric: str, baseline: dict,
                       seed: str = "seed") -> pd.DataFrame:
    """:func:`aggregate.paired_differences` without scipy's warnings for identical pairs (their p-value is NaN)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return aggregate.paired_differences(runs, by, metric, baseline, seed=seed)


def paired_log_ratios(frame: pd.DataFrame, by: Sequence[str], metric: str, baseline: dict,
                      pair: str = "seed") -> pd.DataFrame:
    """Ratios of a positive ``metric`` to ``baseline``, paired on ``pair``: a paired t-test on its logarithm.

    Columns: the ``by`` keys, n_pairs, ratio (geometric mean), ratio_ci_low, ratio_ci_high, t, p_value,
    cohens_dz (of the log differences).
    """
    logged = frame.assign(**{f"log_{metric}": np.log(frame[metric].astype(float))})
    diffs = paired_differences(logged, by, f"log_{metric}", baseline, seed=pair)
    if diffs.empty:
        return diffs
    out = diffs.assign(ratio=np.exp(diffs["mean_diff"]), ratio_ci_low=np.exp(diffs["ci_low"]),
                       ratio_ci_high=np.exp(diffs["ci_high"]))
    return out[[*by, "n_pairs", "ratio", "ratio_ci_low", "ratio_ci_high", "t", "p_value", "cohens_dz"]]


def with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``p_holm`` column: Holm over its rows that have a p-value (others stay NaN)."""
    adjusted = pd.Series(np.nan, index=table.index, dtype=float)
    tested = table["p_value"].notna() if "p_value" in table else pd.Series(False, index=table.index)
    if tested.any():
        adjusted[tested] = holm(table.loc[tested, "p_value"])
    return table.assign(p_holm=adjusted)


def direction(row: pd.Series, up: str, down: str, same: str, center: float = 0.0,
              estimate: str = "mean_diff", alpha: float = 0.05) -> str:
    """``up``/``down`` when the Holm-adjusted test is significant in that direction, else ``same``."""
    if not row["p_holm"] < alpha:
        return same
    return up if row[estimate] > center else down


def ratio_ci(low: float, high: float) -> str:
    """A 95% interval of a ratio."""
    return f"95% CI [{low:.3g}, {high:.3g}]"


def holm_text(p_holm: float) -> str:
    """'Holm-adjusted significant (p = ...)', or why there is no test."""
    if pd.isna(p_holm):
        return "no test (fewer than two pairs or identical values)"
    return f"Holm-adjusted {significance(p_holm)}"
