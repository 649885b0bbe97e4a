"""Multiple-comparison correction and wording helpers shared by the analyses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
