"""Paired-on-seeds helpers shared by the grid analyses (rates_grid, epochs, factorial)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from dropout_lab.reports.stats import ci_text, significance, summarize_over_seeds, t_interval

ALPHA = 0.05


def paired_test(diff: Sequence[float]) -> dict[str, float]:
    """Mean of per-seed differences with a 95% t-interval, paired t-test and Cohen's d_z.

    A paired t-test of x against y is the one-sample t-test of x - y against 0.
    """
    d = pd.Series(diff, dtype=float).dropna().to_numpy()
    n = len(d)
    sd = d.std(ddof=1) if n > 1 else np.nan
    low, high = t_interval(d) if n > 1 and sd > 0 else ((d.mean(), d.mean()) if n > 1 else (np.nan, np.nan))
    if n > 1 and sd > 0:
        test = stats.ttest_1samp(d, 0.0)
        t, p = float(test.statistic), float(test.pvalue)
    elif n > 1:  # identical differences: no spread, the test is undefined unless all are 0
        t, p = np.nan, (1.0 if np.allclose(d, 0) else 0.0)
    else:
        t, p = np.nan, np.nan
    return {"n_pairs": n, "mean_diff": float(d.mean()) if n else np.nan, "ci_low": low, "ci_high": high,
            "t": t, "p_value": p, "cohens_dz": float(d.mean() / sd) if n > 1 and sd > 0 else np.nan}


def summarize(frame: pd.DataFrame, by: Sequence[str], metric: str) -> pd.DataFrame:
    """``summarize_over_seeds`` with a zero-width interval (not NaN) when all seeds agree exactly."""
    zero_spread = (frame.groupby(list(by), dropna=False)[metric]
                   .transform(lambda s: len(s) > 1 and s.nunique() == 1).astype(bool))
    varied = summarize_over_seeds(frame[~zero_spread], by, metric) if (~zero_spread).any() else None
    constant = frame[zero_spread].groupby(list(by), dropna=False)[metric].agg(
        mean="mean", std="std", n="count").reset_index()
    constant["ci_low"] = constant["ci_high"] = constant["mean"]
    parts = [p for p in (varied, constant) if p is not None and not p.empty]
    return pd.concat(parts, ignore_index=True).sort_values(list(by)).reset_index(drop=True)


def excludes_zero(row: pd.Series | dict[str, Any]) -> int:
    """+1 if the 95% CI lies above 0, -1 if below, 0 if it contains 0 (or is undefined)."""
    low, high = row["ci_low"], row["ci_high"]
    if pd.notna(low) and low > 0:
        return 1
    if pd.notna(high) and high < 0:
        return -1
    return 0


def describe_test(row: pd.Series | dict[str, Any], p_column: str = "p_value") -> str:
    """'1.23 pp (95% CI [..] pp, paired t-test over n seeds, significant (p = ..), d_z = ..)'."""
    dz = row["cohens_dz"]
    label = "Holm-adjusted " if p_column == "p_holm" else ""
    return (f"{100 * row['mean_diff']:+.2f} pp ({ci_text(row['ci_low'], row['ci_high'])}, paired t-test over "
            f"{int(row['n_pairs'])} seeds, {label}{significance(row[p_column])}, "
            f"Cohen's d_z = {'n/a' if pd.isna(dz) else f'{dz:.2f}'})")
