"""The reports' sentence fragments: numbers, intervals, tests and verdicts in words.

Percentages are percentage points (``pp``) of accuracy; intervals are 95% unless a fragment says otherwise.
The statistics behind them are in :mod:`dropout_lab.analysis.stats`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import pandas as pd

from dropout_lab.analysis.stats import ALPHA, Row, tost_of


def pct(value: float) -> str:
    """An accuracy or difference in percentage points, e.g. 0.0123 -> '1.23 pp'."""
    return f"{100 * value:.2f} pp"


def ci_text(low: float, high: float) -> str:
    """A 95% interval of a difference, in percentage points."""
    return f"95% CI [{100 * low:.2f}, {100 * high:.2f}] pp"


def level_ci(low: float, high: float, kind: str = "CI") -> str:
    """A 95% interval of an accuracy level (``kind``: CI, or CS for an anytime-valid confidence sequence)."""
    return f"95% {kind} [{low:.4f}, {high:.4f}]"


def ratio_ci(low: float, high: float) -> str:
    """A 95% interval of a ratio."""
    return f"95% CI [{low:.3g}, {high:.3g}]"


def percentile_text(q: float) -> str:
    """Where a value falls, as a percentile (0-100) in words: 83.4 -> 'at the 83rd percentile'; beyond 99.5 'above
    the 99th percentile', below 0.5 'below the 1st percentile' (a rounded 100th or 0th would read as certain)."""
    if q > 99.5:
        return "above the 99th percentile"
    if q < 0.5:
        return "below the 1st percentile"
    n = round(q)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"at the {n}{suffix} percentile"


def significance(p_value: float, alpha: float = ALPHA) -> str:
    """'significant' or 'not significant' at ``alpha``, with the p-value."""
    word = "significant" if p_value < alpha else "not significant"
    return f"{word} (p = {p_value:.3g})"


def holm_text(p_holm: float) -> str:
    """'Holm-adjusted significant (p = ...)', or why there is no test."""
    if pd.isna(p_holm):
        return "no test (fewer than two pairs)"
    return f"Holm-adjusted {significance(p_holm)}"


def direction(row: Row, up: str, down: str, same: str, center: float = 0.0, estimate: str = "mean_diff",
              alpha: float = ALPHA) -> str:
    """``up``/``down`` when the Holm-adjusted test is significant in that direction, else ``same``."""
    if not row["p_holm"] < alpha:
        return same
    return up if row[estimate] > center else down


def describe_test(row: Row, p_column: str = "p_value") -> str:
    """A :func:`~dropout_lab.analysis.stats.paired_test` row: '+1.23 pp (95% CI [..] pp, paired t-test over n seeds,
    significant (p = ..), Cohen's d_z = ..)'."""
    dz = row["cohens_dz"]
    label = "Holm-adjusted " if p_column == "p_holm" else ""
    return (f"{100 * row['mean_diff']:+.2f} pp ({ci_text(row['ci_low'], row['ci_high'])}, paired t-test over "
            f"{int(row['n_pairs'])} seeds, {label}{significance(row[p_column])}, "
            f"Cohen's d_z = {'n/a' if pd.isna(dz) else f'{dz:.2f}'})")


def equivalence_text(result: Mapping[str, Any], margin: float) -> str:
    """A :func:`~dropout_lab.analysis.stats.tost_paired` result in words, the margin and interval in percentage
    points."""
    within = f"±{100 * margin:g} pp"
    if pd.isna(result["p_value"]):
        return "no equivalence test (fewer than two pairs)"
    if result["equivalent"]:
        return f"equivalent within {within} (TOST p = {result['p_value']:.3g})"
    ci = f"90% CI [{100 * result['ci_low']:.2f}, {100 * result['ci_high']:.2f}] pp"
    if result["ci_low"] >= margin or result["ci_high"] <= -margin:
        return f"not equivalent: {ci} lies beyond {within} (TOST p = {result['p_value']:.3g})"
    return f"inconclusive at this budget: {ci} reaches beyond {within} (TOST p = {result['p_value']:.3g})"


def row_equivalence_text(row: Row, margin: float) -> str:
    """:func:`equivalence_text` of a :func:`~dropout_lab.analysis.stats.paired_with_tost` row."""
    return equivalence_text(tost_of(row), margin)


def seed_flip_text(flips: Sequence[tuple[Hashable, str]], verdict: str) -> str | None:
    """'One seed can change the verdict “X”: leaving out seed 3 alone changes it to “Y”; ..., so it rests on few
    seeds.' for :func:`~dropout_lab.analysis.stats.seed_flips`' result, or None when no single seed does."""
    if not flips:
        return None
    parts = [f"leaving out seed {s} alone changes it to “{word}”" for s, word in flips]
    return (f"One seed can change the verdict “{verdict}”: " + "; ".join(parts)
            + ", so it rests on few seeds.")
