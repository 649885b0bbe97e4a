"""Statistics over seeds with pandas and scipy: per-configuration intervals and paired differences."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t confidence interval for the mean (NaNs for fewer than two values)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return (np.nan, np.nan)
    low, high = stats.t.interval(confidence, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return float(low), float(high)


def summarize_over_seeds(runs: pd.DataFrame, by: Sequence[str], metric: str,
                         confidence: float = 0.95) -> pd.DataFrame:
    """Mean, std, n and a t-interval of ``metric`` for each configuration ``by``."""
    grouped = runs.groupby(list(by), dropna=False)[metric]
    table = grouped.agg(mean="mean", std="std", n="count").reset_index()
    intervals = grouped.apply(lambda s: t_interval(s.dropna(), confidence)).reset_index(drop=True)
    table["ci_low"] = [low for low, _ in intervals]
    table["ci_high"] = [high for _, high in intervals]
    return table


def paired_differences(runs: pd.DataFrame, by: Sequence[str], metric: str, baseline: dict,
                       seed: str = "seed", confidence: float = 0.95) -> pd.DataFrame:
    """Each configuration minus ``baseline`` on the seeds both share, with a paired t-test.

    Columns: the ``by`` keys, n_pairs, mean_diff, ci_low, ci_high, t, p_value, cohens_dz
    (mean difference over the standard deviation of the differences).
    """
    by = list(by)
    wide = runs.pivot_table(index=seed, columns=by, values=metric, aggfunc="mean")
    key = tuple(baseline[k] for k in by) if len(by) > 1 else baseline[by[0]]
    base = wide[key]
    rows = []
    for column in wide.columns:
        if column == key:
            continue
        pair = pd.concat([wide[column], base], axis=1).dropna()
        diff = pair.iloc[:, 0] - pair.iloc[:, 1]
        test = stats.ttest_rel(pair.iloc[:, 0], pair.iloc[:, 1]) if len(diff) > 1 else None
        low, high = t_interval(diff, confidence)
        sd = diff.std(ddof=1) if len(diff) > 1 else np.nan
        values = column if isinstance(column, tuple) else (column,)
        rows.append({**dict(zip(by, values)), "n_pairs": len(diff), "mean_diff": diff.mean(),
                     "ci_low": low, "ci_high": high,
                     "t": test.statistic if test else np.nan, "p_value": test.pvalue if test else np.nan,
                     "cohens_dz": diff.mean() / sd if sd and sd > 0 else np.nan})
    return pd.DataFrame(rows)
