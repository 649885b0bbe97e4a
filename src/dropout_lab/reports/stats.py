"""Statistics over seeds (t-intervals, paired differences), multiple-comparison correction and wording."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (m - rank) * p[index])
        adjusted[index] = min(1.0, running)
    return adjusted


def pct(value: float) -> str:
    """An accuracy or difference in percentage points, e.g. 0.0123 -> '1.23 pp'."""
    return f"{100 * value:.2f} pp"


def ci_text(low: float, high: float) -> str:
    """A 95% interval of a difference, in percentage points."""
    return f"95% CI [{100 * low:.2f}, {100 * high:.2f}] pp"


def level_ci(low: float, high: float) -> str:
    """A 95% interval of an accuracy level."""
    return f"95% CI [{low:.4f}, {high:.4f}]"


def significance(p_value: float, alpha: float = 0.05) -> str:
    """'significant' or 'not significant' at ``alpha``, with the p-value."""
    word = "significant" if p_value < alpha else "not significant"
    return f"{word} (p = {p_value:.3g})"


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
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
