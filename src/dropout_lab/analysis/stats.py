"""Every statistic the reports use, in one place: intervals, paired tests, Holm, TOST, ANOVA, seed flips.

Conventions, shared by every table, figure and sentence:

* **Interval**: :func:`t_interval`, the 95% t-interval of a mean: NaN below two values, zero width when all
  values are equal. Tables print it; figures pass it to seaborn as ``errorbar=t_interval``.
* **Paired test**: :func:`paired_test` on the per-seed differences (a paired t-test is the one-sample t-test of
  the differences against 0), with Cohen's d_z and one zero-variance convention (see there).
* **Multiple comparisons**: :func:`holm` / :func:`with_holm` (statsmodels' Holm step-down; NaN p stays NaN).
* **Equivalence**: :func:`tost_paired` (two one-sided paired t-tests against a margin); a report may say "no
  difference" only when it says equivalent. :func:`paired_with_tost` gives both tests of one set of differences,
  :func:`difference_verdict` the one verdict a sentence follows (higher, lower, equivalent, inconclusive).
* **Prediction**: :func:`prediction_interval`, where one new run is expected to fall (not the mean's CI), and
  :func:`prediction_percentile`, where a given single run falls among them.
* **Ratios**: :func:`ratio_of_means`, e.g. of two timings paired on seeds, with a paired bootstrap interval.
* **Robustness**: :func:`seed_flips`, the seeds whose omission alone changes a verdict.
* **ANOVA**: :func:`two_way_anova` (statsmodels OLS, two factors with interaction, optional block).

Which configuration is best: :mod:`dropout_lab.analysis.best`; words: :mod:`dropout_lab.reports.wording`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
from scipy.stats import bootstrap
from scipy.stats import t as student_t
from statsmodels.formula.api import ols
from statsmodels.stats.anova import AnovaRM, anova_lm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import DescrStatsW

ALPHA = 0.05
CONFIDENCE = 0.95
#: The fixed seed of every bootstrap: a report's intervals are the same on every rebuild.
BOOTSTRAP_SEED = 0

#: A table row (a Series or a dict such as :func:`paired_test`'s result).
Row: TypeAlias = pd.Series | Mapping[str, Any]
#: Numbers: a list, an array or a Series.
Values: TypeAlias = Sequence[float] | np.ndarray | pd.Series


# ---------------------------------------------------------------- intervals and summaries

def _finite(values: Values) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[~np.isnan(x)]


def t_interval(values: Values,
               confidence: float = CONFIDENCE) -> tuple[float, float]:
    """t-interval of the mean (95% by default), NaNs ignored: NaN below two values, zero width when all are equal.

    The one interval of the reports: tables print it, figures use it as seaborn's ``errorbar=`` callable.
    """
    x = _finite(values)
    if len(x) < 2:
        return np.nan, np.nan
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    low, high = DescrStatsW(x).tconfint_mean(alpha=1 - confidence)
    return float(low), float(high)


def _predictive(values: Values) -> tuple[int, float, float]:
    """n, mean and scale s sqrt(1 + 1/n) of the t predictive distribution of one new value (n - 1 df), NaNs
    ignored; mean and scale NaN below two values, scale 0 when all are equal."""
    x = _finite(values)
    n = len(x)
    if n < 2:
        return n, np.nan, np.nan
    scale = 0.0 if np.ptp(x) == 0 else float(x.std(ddof=1)) * float(np.sqrt(1 + 1 / n))
    return n, float(x.mean()), scale


def prediction_interval(values: Values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Prediction interval for ONE new value: mean +- t_{(1+c)/2, n-1} s sqrt(1 + 1/n), NaNs ignored.

    Wider than :func:`t_interval` (the mean's): a single new run should be compared with this one.
    NaN below two values; zero width when all are equal.
    """
    n, mean, scale = _predictive(values)
    if n < 2:
        return np.nan, np.nan
    if scale == 0:
        return mean, mean
    low, high = student_t.interval(confidence, n - 1, loc=mean, scale=scale)
    return float(low), float(high)


def prediction_percentile(values: Values, value: float) -> float:
    """Where ``value`` falls as one new value: the percentile (0-100) of :func:`prediction_interval`'s t predictive
    distribution at it (scipy's t cdf, n - 1 df, at mean and scale s sqrt(1 + 1/n)); inside the (1 - a) prediction
    interval exactly when between 100 a/2 and 100 (1 - a/2). NaN below two values; with no spread, 50 at the mean,
    else 0 or 100.
    """
    n, mean, scale = _predictive(values)
    if n < 2:
        return np.nan
    if scale == 0:
        return 50.0 if value == mean else 100.0 if value > mean else 0.0
    return 100 * float(student_t.cdf(value, n - 1, loc=mean, scale=scale))


def ratio_of_means(numerator: Values, denominator: Values, confidence: float = CONFIDENCE,
                   seed: int = BOOTSTRAP_SEED) -> dict[str, float]:
    """mean(numerator) / mean(denominator) of paired values (one pair per seed; a pair with a NaN is dropped), with
    its BCa (bias-corrected and accelerated) interval from a paired bootstrap over the pairs (``scipy.stats.bootstrap``,
    ``paired=True``, a fixed ``seed``, so a report is the same on every rebuild).

    Not the mean of per-pair ratios, which weights a pair with a fast denominator more. Returns n, ratio, ci_low,
    ci_high; the interval is NaN below two pairs and has zero width when every pair has the same ratio.
    """
    x, y = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    ratio = float(x.mean() / y.mean()) if n else np.nan
    low = high = np.nan
    if n > 1 and np.ptp(x / y) == 0:
        low = high = ratio
    elif n > 1:
        result = bootstrap((x, y), lambda a, b, axis: a.mean(axis=axis) / b.mean(axis=axis), paired=True,
                           vectorized=True, confidence_level=confidence, rng=np.random.default_rng(seed))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return {"n": n, "ratio": ratio, "ci_low": low, "ci_high": high}


def geometric_mean(values: Values) -> float:
    """exp(mean(log x)): the centre of a positive quantity compared as ratios."""
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=float)))))


def log_t_band(values: Values) -> tuple[float, float]:
    """:func:`t_interval` of log values, exponentiated: the interval of the geometric mean (a seaborn ``errorbar``)."""
    low, high = t_interval(np.log(np.asarray(values, dtype=float)))
    return float(np.exp(low)), float(np.exp(high))


def summarize_over_seeds(runs: pd.DataFrame, by: Sequence[str], metric: str) -> pd.DataFrame:
    """Mean, std, n and :func:`t_interval` (``ci_low``, ``ci_high``) of ``metric`` for each configuration ``by``."""
    grouped = runs.groupby(list(by), dropna=False)[metric]
    table = grouped.agg(mean="mean", std="std", n="count").reset_index()
    intervals = grouped.apply(t_interval)
    table["ci_low"] = [low for low, _ in intervals]
    table["ci_high"] = [high for _, high in intervals]
    return table


def summarize_metrics(frame: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean and :func:`t_interval` of each metric per group: columns ``<metric>_mean/_ci_low/_ci_high`` and n."""
    grouped = frame.groupby(list(by), dropna=False)
    table = grouped.size().rename("n").reset_index()[list(by)]
    for metric in metrics:
        bounds = grouped[metric].apply(t_interval)
        table[f"{metric}_mean"] = grouped[metric].mean().to_numpy()
        table[f"{metric}_ci_low"] = [low for low, _ in bounds]
        table[f"{metric}_ci_high"] = [high for _, high in bounds]
    table["n"] = grouped[metrics[0]].count().to_numpy()
    return table


# ---------------------------------------------------------------- paired tests

def paired_test(diff: Values) -> dict[str, float]:
    """Mean of per-seed differences, its 95% :func:`t_interval`, the paired t-test and Cohen's d_z.

    The paired t-test of x against y is the one-sample t-test of d = x - y against 0 (statsmodels
    ``DescrStatsW.ttest_mean``); d_z = mean(d) / sd(d). NaN differences (unpaired seeds) are dropped.

    Zero variance (two or more differences, all equal), the one convention of the reports: the interval has
    zero width at the mean; t takes its limit as sd -> 0, so a constant non-zero shift gives t = +-inf, p = 0
    and no difference at all (every d = 0) gives t = 0, p = 1; d_z is NaN (no spread to scale by).
    Below two differences everything but n and the mean is NaN.
    """
    d = _finite(diff)
    n = len(d)
    mean = float(d.mean()) if n else np.nan
    low, high = t_interval(d)
    t = p = dz = np.nan
    if n > 1 and np.ptp(d) == 0:
        t, p = (0.0, 1.0) if mean == 0 else (float(np.copysign(np.inf, mean)), 0.0)
    elif n > 1:
        t, p, _ = DescrStatsW(d).ttest_mean(0.0)
        t, p = float(t), float(p)
        dz = mean / float(d.std(ddof=1))
    return {"n_pairs": n, "mean_diff": mean, "ci_low": low, "ci_high": high, "t": t, "p_value": p,
            "cohens_dz": dz}


def paired_differences(runs: pd.DataFrame, by: Sequence[str], metric: str, baseline: Mapping[str, Any],
                       seed: str = "seed", margin: float | None = None) -> pd.DataFrame:
    """Each configuration minus ``baseline`` on the seeds both share: one :func:`paired_test` per configuration.

    Columns: the ``by`` keys, n_pairs, mean_diff, ci_low, ci_high, t, p_value, cohens_dz; with a ``margin``
    also :func:`paired_with_tost`'s tost_p, equivalent, ci90_low, ci90_high.
    """
    by = list(by)
    wide = runs.pivot_table(index=seed, columns=by, values=metric, aggfunc="mean")
    key = tuple(baseline[k] for k in by) if len(by) > 1 else baseline[by[0]]
    rows = []
    for column in wide.columns:
        if column == key:
            continue
        values = column if isinstance(column, tuple) else (column,)
        diff = wide[column] - wide[key]
        tests = paired_test(diff) if margin is None else paired_with_tost(diff, margin)
        rows.append({**dict(zip(by, values, strict=True)), **tests})
    return pd.DataFrame(rows)


def paired_log_ratios(frame: pd.DataFrame, by: Sequence[str], metric: str, baseline: Mapping[str, Any],
                      pair: str = "seed") -> pd.DataFrame:
    """Ratios of a positive ``metric`` to ``baseline``, paired on ``pair``: :func:`paired_test` on its logarithm.

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


def tost_paired(diff: Values, margin: float,
                alpha: float = ALPHA) -> dict[str, Any]:
    """Equivalence of paired samples by TOST: two one-sided t-tests of H0: |mean(d)| >= ``margin``.

    ``diff`` are the per-pair differences (NaNs dropped); statsmodels ``DescrStatsW.ttost_mean(-margin, margin)``.
    Returns n, mean_diff, the (1 - 2 alpha) = 90% t-interval ``ci_low``/``ci_high`` (it lies inside +-margin
    exactly when both one-sided tests reject at alpha), ``p_value`` (the larger one-sided p) and ``equivalent``
    (p < alpha). Zero variance follows :func:`paired_test`: both t statistics are infinite, so p = 0 when
    |mean| < margin, else 1, and the interval has zero width. Below two differences p and the interval are NaN.
    """
    d = _finite(diff)
    n = len(d)
    mean = float(d.mean()) if n else np.nan
    low, high = t_interval(d, confidence=1 - 2 * alpha)
    if n < 2:
        p = np.nan
    elif np.ptp(d) == 0:
        p = 0.0 if abs(mean) < margin else 1.0
    else:
        p = float(DescrStatsW(d).ttost_mean(-margin, margin)[0])
    return {"n": n, "mean_diff": mean, "ci_low": low, "ci_high": high, "p_value": p,
            "equivalent": bool(p < alpha)}


def paired_with_tost(diff: Values, margin: float) -> dict[str, Any]:
    """:func:`paired_test` of the differences plus their :func:`tost_paired` within +-``margin``.

    The TOST result is in ``tost_p``, ``equivalent`` and its 90% interval ``ci90_low``/``ci90_high``.
    """
    tost = tost_paired(diff, margin)
    return {**paired_test(diff), "tost_p": tost["p_value"], "equivalent": tost["equivalent"],
            "ci90_low": tost["ci_low"], "ci90_high": tost["ci_high"]}


def tost_of(row: Row) -> dict[str, Any]:
    """The :func:`tost_paired` result stored in a :func:`paired_with_tost` row (for ``wording.equivalence_text``)."""
    return {"n": row["n_pairs"], "mean_diff": row["mean_diff"], "ci_low": row["ci90_low"],
            "ci_high": row["ci90_high"], "p_value": row["tost_p"], "equivalent": bool(row["equivalent"])}


#: The verdicts of :func:`difference_verdict`.
HIGHER, LOWER, EQUIVALENT, INCONCLUSIVE = "higher", "lower", "equivalent", "inconclusive"


def difference_verdict(row: Row, p_column: str = "p_holm", estimate: str = "mean_diff", center: float = 0.0,
                       alpha: float = ALPHA) -> str:
    """What a sentence may say of a paired difference (a :func:`paired_with_tost` row).

    ``higher``/``lower``: the (Holm-adjusted) paired test is significant in that direction; ``equivalent``:
    it is not, and TOST says equivalent within the margin; ``inconclusive``: neither (or no test).
    """
    p = row[p_column] if p_column in row else np.nan
    if pd.notna(p) and p < alpha:
        return HIGHER if row[estimate] > center else LOWER
    if "equivalent" in row and bool(row["equivalent"]):
        return EQUIVALENT
    return INCONCLUSIVE


def excludes_zero(row: Row) -> int:
    """+1 if the 95% CI lies above 0, -1 if below, 0 if it contains 0 (or is undefined)."""
    low, high = row["ci_low"], row["ci_high"]
    if pd.notna(low) and low > 0:
        return 1
    if pd.notna(high) and high < 0:
        return -1
    return 0


def seed_flips(frame: pd.DataFrame | pd.Series, verdict: Callable[[Any], str],
               seed: str | None = None) -> list[tuple[Hashable, str]]:
    """The seeds whose omission alone changes ``verdict(frame)``, each with the verdict without it.

    Seeds are ``frame``'s index, or its column ``seed``. Leave-one-seed-out: with n seeds, n re-computations.
    Below three seeds there is nothing to learn (one seed left cannot be tested): no flips are reported.
    """
    full = verdict(frame)
    seeds = list(dict.fromkeys(frame.index if seed is None else frame[seed]))
    if len(seeds) < 3:
        return []
    withouts = [(s, verdict(frame.drop(index=s) if seed is None else frame[frame[seed] != s])) for s in seeds]
    return [(s, without) for s, without in withouts if without != full]


# ---------------------------------------------------------------- multiple comparisons

def holm(p_values: Values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (statsmodels ``multipletests(method="holm")``) over the non-NaN ones.

    A NaN p-value (no test) stays NaN and does not count towards the number of tests.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    if tested.any():
        adjusted[tested] = multipletests(p[tested], method="holm")[1]
    return adjusted


def with_holm(table: pd.DataFrame, column: str = "p_value") -> pd.DataFrame:
    """``table`` with a ``p_holm`` column: :func:`holm` over its rows' ``column`` (NaN where there is no test)."""
    p = table[column] if column in table else pd.Series(np.nan, index=table.index)
    return table.assign(p_holm=holm(p))


# ---------------------------------------------------------------- two-way ANOVA

def two_way_anova(frame: pd.DataFrame, metric: str, a: str, b: str,
                  block: str | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Two-way ANOVA of ``metric`` with interaction, ``a``/``b`` boolean columns (True: that factor is on).

    statsmodels ``ols`` + ``anova_lm(typ=3)``, the factors coded -1/2 (off) and +1/2 (on), so the interaction
    coefficient is the cell-mean contrast both - b only - a only + neither; ``block`` (e.g. the seed) enters as a
    randomized-block factor when it has two or more levels. Type III: each term's SS is the rise in residual SS
    when that term alone is dropped; with these centred codes and a balanced design (every cell once per block)
    Types I, II and III coincide. ``F``/``p_value`` use the pooled residual. With a block, ``F_rm``/``p_rm``
    test each factor term against its term x block interaction (statsmodels ``AnovaRM`` over the blocks that
    have all four cells, on their cell means; F_rm = t^2 of the paired t-test of the per-block contrast).

    Returns the table (term, SS, df, MS, F, p_value[, F_rm, df_rm_error, p_rm]; terms ``a``, ``b``,
    ``"a x b"``, ``block``, ``"residual"``) and the interaction coefficient's t-test (estimate, se, t, df, p_value).
    """
    data = pd.DataFrame({"y": frame[metric].to_numpy(dtype=float),
                         "xa": np.where(frame[a].astype(bool), 0.5, -0.5),
                         "xb": np.where(frame[b].astype(bool), 0.5, -0.5)})
    if block is not None:
        data["block"] = frame[block].to_numpy()
    data = data.dropna(subset=["y"])
    if block is not None and data["block"].nunique() < 2:
        block = None  # a single block has nothing to separate
    terms = {"xa": a, "xb": b, "xa:xb": f"{a} x {b}"} | ({"C(block)": block} if block else {})
    fit = ols("y ~ xa * xb" + (" + C(block)" if block else ""), data).fit()
    df_resid = int(fit.df_resid)
    with np.errstate(divide="ignore", invalid="ignore"):
        # without residual df there is no test; Type I gives the (balanced: equal) sums of squares
        lm = anova_lm(fit, typ=3 if df_resid > 0 else 1)
    tested = df_resid > 0
    rows = [{"term": name, "SS": lm.loc[key, "sum_sq"], "df": int(lm.loc[key, "df"]),
             "MS": lm.loc[key, "sum_sq"] / lm.loc[key, "df"], "F": lm.loc[key, "F"] if tested else np.nan,
             "p_value": lm.loc[key, "PR(>F)"] if tested else np.nan} for key, name in terms.items()]
    rows.append({"term": "residual", "SS": fit.ssr, "df": df_resid, "MS": fit.ssr / df_resid if tested else np.nan})
    table = pd.DataFrame(rows)
    if block:
        table = _with_repeated_measures(table, data, list(terms.values())[:3])
    coefficient = {"estimate": float(fit.params["xa:xb"]), "se": np.nan, "t": np.nan, "df": df_resid,
                   "p_value": np.nan}
    if tested:
        coefficient |= {"se": float(fit.bse["xa:xb"]), "t": float(fit.tvalues["xa:xb"]),
                        "p_value": float(fit.pvalues["xa:xb"])}
    return table, coefficient


def _with_repeated_measures(table: pd.DataFrame, data: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """``table`` with F_rm, df_rm_error and p_rm for the three factor terms (``names``): AnovaRM, seed as subject."""
    cells = data.groupby("block")[["xa", "xb"]].apply(lambda g: len(g.drop_duplicates()))
    complete = data[data["block"].isin(cells[cells == 4].index)]
    if complete["block"].nunique() < 2:
        return table
    with np.errstate(divide="ignore", invalid="ignore"):
        rm = AnovaRM(complete, "y", "block", within=["xa", "xb"], aggregate_func="mean").fit().anova_table
    by_name = dict(zip(names, ["xa", "xb", "xa:xb"], strict=True))
    out = table.copy()
    for column, source in (("F_rm", "F Value"), ("df_rm_error", "Den DF"), ("p_rm", "Pr > F")):
        out[column] = [rm.loc[by_name[t], source] if t in by_name else np.nan for t in table["term"]]
    return out
