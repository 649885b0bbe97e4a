"""A study's declared :class:`AnalysisPlan` evaluated on its per-run table, look by look.

* :func:`plan_table`: the run table with the derived columns a plan may select on (``technique``).
* :func:`plan_looks`: every declared comparison at every look (the first n seeds of the design), with the
  anytime-valid tests of :mod:`dropout_lab.analysis.sequential` and the plan's correction within each family.
* :func:`plan_verdicts`: each comparison's verdict at the last look, when it was decided, or how many seeds
  it would still need; :func:`all_decided` is the stopping rule of a sequential design.
* :func:`reference_claims`: absolute claims against a reference value: a printed run against the prediction
  interval of one run, a goal against the mean's interval with the test set's own error.

Verdict at a look: significant (adjusted p_difference < alpha) -> higher/lower by the sign of the mean
difference; else equivalent (adjusted p_equivalence < alpha); else undecided. Anytime p-values are running
minima and the correction is monotone in every p, so a decided comparison stays decided, and the adjusted
p-values at any stopping time (however it was chosen) are valid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm
from scipy.stats import t as student_t
from statsmodels.stats.multitest import multipletests

from dropout_lab.analysis import sequential
from dropout_lab.analysis.stats import prediction_interval, prediction_percentile, t_interval
from dropout_lab.config.analysis_plan import AnalysisPlan, SeedDesign
from dropout_lab.errors import InvalidValueError

HIGHER, LOWER, EQUIVALENT, UNDECIDED = "higher", "lower", "equivalent", "undecided"
#: The label of runs whose rates are both 0: every technique is the identity there (ex7_tune technique=none).
NO_NOISE = "none"
SEED = "seed"
LOOK_COLUMNS = ("look", "n", "comparison", "family", "margin", "n_pairs", "mean_diff", "sd", "cs_low", "cs_high",
                "eq_low", "eq_high", "p_difference", "p_equivalence", "p_difference_adj", "p_equivalence_adj",
                "verdict", "decided")
VERDICT_COLUMNS = ("comparison", "family", "margin", "why", "n_pairs", "mean_diff", "cs_low", "cs_high", "eq_low",
                   "eq_high", "p_difference_adj", "p_equivalence_adj", "verdict", "seeds_taken", "max_hit",
                   "seeds_needed")
REFERENCE_COLUMNS = ("name", "value", "why", "goal", "interval", "n", "mean", "sd", "low", "high", "percentile",
                     "verdict", "test_error", "max_hit", "seeds_needed")
#: A reference's verdicts: a printed number against one run's prediction interval; a goal against the mean's.
CONSISTENT, ABOVE, BELOW, MET, NOT_MET = "consistent", "above", "below", "met", "not met"
#: What a reference row's interval (``low``, ``high``) is for: one new run, or the mean (test-set error included).
ONE_RUN_INTERVAL, MEAN_INTERVAL = "one run", "mean"


# ---------------------------------------------------------------- selecting runs

def technique_labels(runs: pd.DataFrame) -> pd.Series:
    """Each run's technique: its ``model.noise`` (or ``noise``), or ``none`` when both rates are 0 (no noise)."""
    noise = runs["model.noise"] if "model.noise" in runs else runs["noise"]
    rates = [c for c in ("model.dropout_1", "model.dropout_2") if c in runs]
    if not rates:
        return noise.rename("technique")
    silent = (runs[rates].astype(float) == 0).all(axis=1)
    return noise.where(~silent, NO_NOISE).rename("technique")


def plan_table(runs: pd.DataFrame, instruments: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """``runs`` with the derived columns a plan's cells may name: ``technique`` (see :func:`technique_labels`).

    ``instruments`` (name -> tidy rows with ``trial``, as ``store.run_tables.instrument_table``) add their rows,
    each with its run's columns, its own key columns as they are (``mode``, ``T``, ``layer``, ``epoch``...) and
    its values as ``NAME.COLUMN`` (``test_time.accuracy``): a comparison with ``metric: test_time.accuracy``
    selects them by ``{mode: mc, T: 100}`` and reads one value per seed. Run rows have no such value, and an
    instrument row repeats its run's columns, so a run metric's per-seed mean is unchanged.
    """
    if "model.noise" in runs or "noise" in runs:
        runs = runs.assign(technique=technique_labels(runs))
    parts = [runs]
    for name, rows in (instruments or {}).items():
        if rows.empty or "trial" not in rows:
            continue
        own = rows.drop(columns=[SEED], errors="ignore")
        values = [c for c in own.columns if c != "trial" and pd.api.types.is_float_dtype(own[c])]
        own = own.rename(columns={c: f"{name}.{c}" for c in values})
        parts.append(own.merge(runs, on="trial", how="inner", suffixes=("", "_run")))
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else runs


def _matches(column: pd.Series, value: Any) -> pd.Series:
    """Rows of ``column`` equal to ``value``: as strings when the types differ (0.5 vs "0.5"); None matches NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return column.isna()

    def equal(cell: Any) -> bool:
        if cell is None or (isinstance(cell, float) and np.isnan(cell)):
            return False
        try:
            if bool(cell == value):
                return True
        except (TypeError, ValueError):
            pass
        return str(cell) == str(value)

    return column.map(equal).astype(bool)


def select(table: pd.DataFrame, cell: Mapping[str, Any], where: str) -> pd.DataFrame:
    """The rows of ``table`` whose columns equal every value of ``cell``; ``where`` names the cell in errors."""
    missing = sorted(set(cell) - set(table.columns))
    if missing:
        raise InvalidValueError(where, dict(cell), f"keys that are columns of the run table (missing: {missing}; "
                                f"it has {', '.join(sorted(map(str, table.columns)))})")
    return table[cell_mask(table, cell)]


def cell_mask(table: pd.DataFrame, cell: Mapping[str, Any]) -> pd.Series:
    """Which rows of ``table`` hold every value of ``cell`` (see :func:`_matches`); none when a key is no column."""
    mask = pd.Series(True, index=table.index)
    for key, value in cell.items():
        if key not in table:
            return mask & False
        mask &= _matches(table[key], value)
    return mask


def _metric_of(table: pd.DataFrame, name: str, where: str) -> str:
    if name not in table:
        metrics = [c for c in map(str, table.columns) if "acc" in c or "loss" in c]
        raise InvalidValueError(where, name, f"a column of the run table, e.g. {', '.join(metrics) or 'none here'}")
    return name


def _per_seed(rows: pd.DataFrame, metric: str) -> pd.Series:
    return rows.groupby(SEED)[metric].mean()


# ---------------------------------------------------------------- looks and verdicts

def _verdict(p_difference: float, p_equivalence: float, mean: float, alpha: float) -> str:
    if pd.notna(p_difference) and p_difference < alpha:
        return HIGHER if mean > 0 else LOWER
    if pd.notna(p_equivalence) and p_equivalence < alpha:
        return EQUIVALENT
    return UNDECIDED


def _adjust(p: pd.Series, method: str) -> np.ndarray:
    """``multipletests(method=...)`` over the non-NaN p-values; NaN (no test) stays NaN and is not counted.

    Holm's step-down is written out (max-accumulated (m - i) p_(i), capped at 1; the tests check it against
    statsmodels) because statsmodels' Holm branch calls ``gc.collect()`` on every call, about 0.1-0.5 s in a
    process holding pandas and scipy, and a plan adjusts every family at every look.
    """
    values = p.to_numpy(dtype=float)
    out = np.full(values.shape, np.nan)
    tested = ~np.isnan(values)
    if not tested.any():
        return out
    if method == "holm":
        order = np.argsort(values[tested])
        ranked = values[tested][order] * np.arange(tested.sum(), 0, -1)
        adjusted = np.empty_like(ranked)
        adjusted[order] = np.minimum(1.0, np.maximum.accumulate(ranked))
        out[tested] = adjusted
    else:
        out[tested] = multipletests(values[tested], method=method)[1]
    return out


def plan_looks(table: pd.DataFrame, plan: AnalysisPlan, looks: Sequence[int], seed_order: Sequence[int],
               metric: str | None = None) -> pd.DataFrame:
    """One row per (look, comparison) of ``plan`` on ``table`` (columns: :data:`LOOK_COLUMNS`).

    The look with n seeds uses only runs whose seed is among ``seed_order[:n]``; treatment and control are
    paired on the seed (several runs of one cell and seed are averaged; a seed missing from either side is left
    out, so ``n_pairs`` may be below n). A comparison reads ``comparison.metric``, else ``metric``, else the
    plan's primary test column. The intervals and p-values are anytime-valid (running intersection / minimum
    over the looks so far; rho tuned at the first look); ``*_adj`` apply ``plan.correction`` within each family
    at that look, to significance and equivalence alike.
    """
    looks = [int(n) for n in looks]
    if not looks or looks != sorted(set(looks)) or looks[0] < 1 or looks[-1] > len(seed_order):
        raise InvalidValueError("looks", looks, f"increasing seed counts from 1 to len(seed_order) = {len(seed_order)}")
    if SEED not in table:
        raise InvalidValueError("table", sorted(map(str, table.columns)), f"a per-run table with a {SEED!r} column")
    rows = []
    for i, comparison in enumerate(plan.comparisons):
        where = f"plan.comparisons[{i}]"
        column = _metric_of(table, comparison.metric or metric or plan.test_column, f"{where}.metric")
        sides = {side: _per_seed(select(table, cell, f"{where}.{side}"), column) for side, cell in comparison.cells()}
        treatment, control = sides["treatment"] - sides["control"], 0.0
        if comparison.minus is not None:  # a difference of differences, on the seeds all four cells have
            control = sides["minus.treatment"] - sides["minus.control"]
        per_look = [sequential.summary(_differences(treatment, control, seed_order[:n])) for n in looks]
        n_pairs, means, sds = (np.array(v, dtype=float) for v in zip(*per_look))
        tests = sequential.accumulate(sequential.evaluate(n_pairs, means, sds, comparison.margin, plan.alpha,
                                                          n_opt=looks[0]))
        for j, n in enumerate(looks):
            rows.append({"look": j + 1, "n": n, "comparison": comparison.name, "family": comparison.family,
                         "margin": comparison.margin, "n_pairs": int(n_pairs[j]), "mean_diff": means[j],
                         "sd": sds[j], **{k: float(v[j]) for k, v in tests.items()}})
    frame = pd.DataFrame(rows, columns=[c for c in LOOK_COLUMNS if c not in ("p_difference_adj", "p_equivalence_adj",
                                                                             "verdict", "decided")])
    for kind in ("difference", "equivalence"):
        frame[f"p_{kind}_adj"] = np.nan
        for _, group in frame.groupby(["look", "family"], sort=False):
            frame.loc[group.index, f"p_{kind}_adj"] = _adjust(group[f"p_{kind}"], plan.correction)
    frame["verdict"] = [_verdict(r.p_difference_adj, r.p_equivalence_adj, r.mean_diff, plan.alpha)
                        for r in frame.itertuples()]
    frame["decided"] = frame["verdict"] != UNDECIDED
    return frame[list(LOOK_COLUMNS)]


def _differences(treatment: pd.Series, control: pd.Series | float, seeds: Sequence[int]) -> np.ndarray:
    """Treatment minus control on the seeds among ``seeds`` that both have (a seed where either is NaN, e.g. a
    difference missing one of its cells, is left out; a float control is subtracted from every seed)."""
    wanted = set(seeds)
    diff = (treatment - control).dropna()
    return diff.loc[[s for s in diff.index if s in wanted]].to_numpy(dtype=float)


def plan_verdicts(looks: pd.DataFrame, plan: AnalysisPlan, design: SeedDesign | None) -> pd.DataFrame:
    """Each comparison at the last look of :func:`plan_looks` (columns: :data:`VERDICT_COLUMNS`).

    ``seeds_taken``: n at the first look where it was decided (NaN if never); ``max_hit``: a sequential
    ``design`` reached its ``max`` undecided; ``seeds_needed``: for an undecided one, the seeds at which its
    observed mean and sd would decide (:func:`sequential.seeds_needed` at alpha / family size, Holm's first
    and strictest step, tuned at the first look), NaN if decided or beyond the cap.
    """
    if looks.empty:
        return pd.DataFrame(columns=list(VERDICT_COLUMNS))
    whys = {c.name: c.why for c in plan.comparisons}
    family_sizes = looks.groupby("family")["comparison"].nunique()
    first_n = int(looks["n"].min())
    rows = []
    for name, rows_of in looks.sort_values("look", kind="stable").groupby("comparison", sort=False):
        last = rows_of.iloc[-1]
        decided = rows_of[rows_of["decided"]]
        needed: float = np.nan
        if not last["decided"]:
            alpha = plan.alpha / int(family_sizes[last["family"]])
            found = sequential.seeds_needed(last["mean_diff"], last["sd"], last["margin"], alpha, first_n)
            needed = float(found) if found is not None else np.nan
        rows.append({**{k: last[k] for k in ("comparison", "family", "margin", "n_pairs", "mean_diff", "cs_low",
                                              "cs_high", "eq_low", "eq_high", "p_difference_adj",
                                              "p_equivalence_adj", "verdict")},
                     "why": whys.get(name, ""),
                     "seeds_taken": float(decided["n"].iloc[0]) if not decided.empty else np.nan,
                     "max_hit": bool(design is not None and int(last["n"]) == design.max and not last["decided"]),
                     "seeds_needed": needed})
    return pd.DataFrame(rows)[list(VERDICT_COLUMNS)]


def all_decided(looks: pd.DataFrame, n: int) -> bool:
    """True when every comparison is decided at the look with ``n`` seeds (a plan with none: nothing to decide)."""
    if looks.empty:
        return True
    at = looks[looks["n"] == n]
    if at.empty:
        raise InvalidValueError("n", n, f"a look of this table: {sorted(looks['n'].unique().tolist())}")
    return bool(at["decided"].all())


# ---------------------------------------------------------------- absolute claims

def reference_claims(table: pd.DataFrame, plan: AnalysisPlan, metric: str | None = None, n_test: int = 10_000,
                     design: SeedDesign | None = None) -> pd.DataFrame:
    """One row per ``plan.references`` entry (columns: :data:`REFERENCE_COLUMNS`), ``interval`` saying which kind.

    A printed number (not a goal) is one run, scored on the same ``n_test`` test images as ours: the question is
    whether it is a plausible single run of this protocol. Its interval is the seeds' (1 - alpha) prediction
    interval for one new run, mean +- t_{1 - alpha/2, n - 1} sd sqrt(1 + 1/n) (:func:`stats.prediction_interval`),
    with no test-set error: that error is shared by the printed run and ours, not a difference between them.
    ``percentile`` is where the value falls in the same t predictive distribution. Verdict: ``consistent``
    (inside), ``above`` or ``below`` (the side the printed value is on), decided whenever n >= 2; else
    ``undecided``.

    A goal is a claim about the accuracy on the population, not on this one test set: every seed is scored on the
    same ``n_test`` images, so their binomial error (variance p (1 - p) / n_test) does not shrink with seeds.
    alpha is split in two (a Bonferroni union): the seeds' (1 - alpha/2) interval of their mean (the anytime
    confidence sequence, tuned at ``design.min``, for a sequential ``design``; else the t-interval) is widened
    on each side by the normal (1 - alpha/2) half-width of the test set's error, z_{1 - alpha/4}
    sqrt(p (1 - p) / n_test) at p = the mean. Verdict: ``met`` (low > value), ``not met`` (high < value), else
    ``undecided``. A reference's ``margin`` is not read (see :class:`Reference`). ``test_error`` is that
    half-width; for an undecided goal, ``max_hit`` says a sequential ``design`` reached its ``max``, and
    ``seeds_needed`` is the fewest seeds at which the same mean and sd would decide it (:func:`_goal_seeds_needed`),
    NaN when none would: no number of seeds does once ``test_error`` alone reaches the value.
    """
    if n_test < 1:
        raise InvalidValueError("n_test", n_test, "the number of test images, an integer >= 1")
    rows = []
    for i, reference in enumerate(plan.references):
        where = f"plan.references[{i}]"
        column = _metric_of(table, metric or plan.test_column, "metric")
        values = _per_seed(select(table, reference.cell, f"{where}.cell"), column).dropna().to_numpy(dtype=float)
        n, mean, sd = sequential.summary(values)
        test_error, max_hit, needed = np.nan, False, np.nan
        if reference.goal:
            low, high = _seed_interval(values, n, mean, sd, plan.alpha / 2, design)
            test_error = float(norm.isf(plan.alpha / 4)) * np.sqrt(mean * (1 - mean) / n_test) if n else np.nan
            low, high, percentile = low - test_error, high + test_error, np.nan
            verdict = _goal_verdict(low, high, reference.value)
            if verdict == UNDECIDED:
                max_hit = design is not None and n >= design.max
                needed = _goal_seeds_needed(n, mean, sd, test_error, reference.value, plan.alpha / 2, design)
        else:
            low, high = prediction_interval(values, confidence=1 - plan.alpha)
            percentile = prediction_percentile(values, reference.value)
            verdict = _printed_verdict(low, high, reference.value)
        rows.append({"name": reference.name, "value": reference.value, "why": reference.why, "goal": reference.goal,
                     "interval": MEAN_INTERVAL if reference.goal else ONE_RUN_INTERVAL, "n": n, "mean": mean,
                     "sd": sd, "low": low, "high": high, "percentile": percentile, "verdict": verdict,
                     "test_error": test_error, "max_hit": max_hit, "seeds_needed": needed})
    return pd.DataFrame(rows, columns=list(REFERENCE_COLUMNS))


def _seed_interval(values: np.ndarray, n: int, mean: float, sd: float, alpha: float,
                   design: SeedDesign | None) -> tuple[float, float]:
    if design is None:
        return t_interval(values, confidence=1 - alpha)
    tests = sequential.evaluate(n, mean, sd, margin=0.0, alpha=alpha, n_opt=design.min)
    return float(tests["cs_low"]), float(tests["cs_high"])


def _goal_seeds_needed(n: int, mean: float, sd: float, test_error: float, value: float, alpha: float,
                       design: SeedDesign | None, cap: int = sequential.SEEDS_CAP) -> float:
    """The fewest seeds (more than ``n``, up to ``cap``) at which a goal's interval, with this mean, sd and test-set
    error, would lie wholly on one side of ``value``; NaN if none would (always so when the test set's error alone
    reaches ``value``). The seeds' part is :func:`_seed_interval`'s at each n, one look, no running intersection."""
    if not (np.isfinite(mean) and np.isfinite(sd)) or abs(mean - value) <= test_error:
        return np.nan
    sizes = np.arange(max(n + 1, 2), cap + 1)
    if design is None:
        half = student_t.ppf(1 - alpha / 2, sizes - 1) * sd / np.sqrt(sizes)
    else:
        half = sequential.evaluate(sizes, mean, sd, margin=0.0, alpha=alpha, n_opt=design.min)["cs_high"] - mean
    decided = half + test_error < abs(mean - value)
    return float(sizes[np.argmax(decided)]) if decided.any() else np.nan


def _goal_verdict(low: float, high: float, value: float) -> str:
    if pd.isna(low) or pd.isna(high):
        return UNDECIDED
    return MET if low > value else NOT_MET if high < value else UNDECIDED


def _printed_verdict(low: float, high: float, value: float) -> str:
    if pd.isna(low) or pd.isna(high):
        return UNDECIDED
    return ABOVE if value > high else BELOW if value < low else CONSISTENT
