"""Which configuration is best, selection-aware, on runs paired by seed: :func:`best_subset` (multiple comparison
with the best: the configurations that may be best) and :func:`prob_best` (paired bootstrap of the seeds: how often
each one is the argmax). The tests and intervals themselves are :mod:`~dropout_lab.analysis.stats`' and
:mod:`~dropout_lab.analysis.sequential`'s."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from dropout_lab.analysis import sequential
from dropout_lab.analysis.stats import ALPHA, holm, paired_test, t_interval
from dropout_lab.errors import InvalidValueError


def seeds_by_configuration(table: pd.DataFrame, by: str, metric: str, seed: str = "seed") -> pd.DataFrame:
    """Seeds x configurations of ``metric`` (runs of one configuration and seed averaged), keeping only the seeds
    every configuration has: the paired layout :func:`best_subset` and :func:`prob_best` read."""
    missing = [c for c in (by, metric, seed) if c not in table]
    if missing:
        raise InvalidValueError("table", sorted(map(str, table.columns)),
                                f"a run table with the columns {by!r}, {metric!r} and {seed!r} (missing: {missing})")
    wide = table.pivot_table(index=seed, columns=by, values=metric, aggfunc="mean")
    return wide.dropna(axis=0, how="any")


def _paired(table: pd.DataFrame, by: str, metric: str, seed: str) -> pd.DataFrame:
    """:func:`seeds_by_configuration`, refused below two configurations or two shared seeds."""
    wide = seeds_by_configuration(table, by, metric, seed)
    if wide.shape[1] < 2:
        raise InvalidValueError(by, list(wide.columns), "at least two configurations with runs of every seed")
    if wide.shape[0] < 2:
        raise InvalidValueError(seed, list(wide.index), "at least two seeds that every configuration has")
    return wide


def prob_best(table: pd.DataFrame, by: str, metric: str, seed: str = "seed", resamples: int = 10_000,
              rng_seed: int = 0) -> pd.Series:
    """Bootstrap P(best): how often each configuration ``by`` has the highest mean ``metric`` when the seeds are
    resampled with replacement (``resamples`` times, numpy's generator seeded with ``rng_seed``).

    Paired: a resample draws seeds, and every configuration's value of a drawn seed comes with it (the seeds every
    configuration has, :func:`seeds_by_configuration`). A tie for the highest mean splits that resample between the
    tied ones, so the values sum to 1. Written with numpy because ``scipy.stats.bootstrap`` returns an interval of
    a statistic, not how often each configuration is the argmax. A descriptive reading of the ranking's
    stability, not a test: :func:`best_subset` is the one with a guarantee.
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int | np.integer) or resamples < 1:
        raise InvalidValueError("resamples", resamples, "an integer >= 1, e.g. 10000")
    wide = _paired(table, by, metric, seed)
    values = wide.to_numpy(dtype=float)
    drawn = np.random.default_rng(rng_seed).integers(0, len(values), size=(resamples, len(values)))
    means = values[drawn].mean(axis=1)  # resamples x configurations
    top = means == means.max(axis=1, keepdims=True)
    shares = top / top.sum(axis=1, keepdims=True)
    return pd.Series(shares.mean(axis=0), index=wide.columns, name="p_best")


def best_subset(table: pd.DataFrame, by: str, metric: str, alpha: float = ALPHA, seed: str = "seed",
                n_opt: int | None = None) -> pd.DataFrame:
    """Multiple comparison with the best on paired seeds: the configurations ``by`` that may have the highest
    true mean ``metric``, at confidence 1 - ``alpha``.

    For each ordered pair (i, j), i != j, the one-sided paired t-test of "j beats i" (H0: mu_i >= mu_j) on the
    per-seed differences j - i (:func:`paired_test`'s t and zero-variance convention, the p-value from scipy's t
    distribution with n - 1 df); Holm (:func:`holm`) over all k (k - 1) ordered pairs. i is excluded from "may be
    best" when any of its tests rejects. Why the set that remains holds the true best with probability >= 1 - alpha:
    for the true best b, mu_b >= mu_j for every j, so every null hypothesis of b's tests is true, and b is excluded
    only by a false rejection; Holm keeps the chance of any false rejection among all the tests at most alpha.

    With ``n_opt`` (the first look of a sequential seed design, whose stopping looked at the data) every p-value and
    interval is anytime-valid instead (:mod:`~dropout_lab.analysis.sequential`): the one-sided mixture p-value of
    "j beats i" and each mean's confidence sequence, so the guarantee holds at the data-dependent number of seeds.

    Returns one row per configuration, highest mean first: ``by``, n_seeds (shared by all), mean, ci_low, ci_high
    (:func:`t_interval` over those seeds), p_beaten (the smallest Holm-adjusted p of its tests: the evidence that
    some other configuration beats it), beaten_by (those whose test rejects, comma-separated, highest mean first) and
    may_be_best.
    """
    if not 0.0 < alpha < 1.0:
        raise InvalidValueError("alpha", alpha, "a level in (0, 1), e.g. 0.05")
    wide = _paired(table, by, metric, seed)
    names = list(wide.mean().sort_values(ascending=False, kind="stable").index)
    pairs = [(i, j) for i in names for j in names if i != j]
    df = len(wide) - 1

    def p_beats(i: Hashable, j: Hashable) -> float:  # H0: mu_j - mu_i <= 0
        if n_opt is None:
            return float(student_t.sf(paired_test(wide[j] - wide[i])["t"], df))
        n, mean, sd = sequential.summary((wide[j] - wide[i]).to_numpy(dtype=float))
        return float(sequential.evaluate(n, mean, sd, 0.0, alpha, n_opt)["p_above_margin"])

    def interval(values: pd.Series) -> tuple[float, float]:
        if n_opt is None:
            return t_interval(values)
        tests = sequential.evaluate(*sequential.summary(values.to_numpy(dtype=float)), 0.0, alpha, n_opt)
        return float(tests["cs_low"]), float(tests["cs_high"])

    p_adjusted = holm([p_beats(i, j) for i, j in pairs])
    rows = []
    for name in names:
        mine = [(j, p) for (i, j), p in zip(pairs, p_adjusted) if i == name]
        beaten_by = [j for j, p in mine if p < alpha]
        low, high = interval(wide[name])
        rows.append({by: name, "n_seeds": len(wide), "mean": float(wide[name].mean()), "ci_low": low, "ci_high": high,
                     "p_beaten": min(p for _, p in mine), "beaten_by": ", ".join(map(str, beaten_by)),
                     "may_be_best": not beaten_by})
    return pd.DataFrame(rows)
