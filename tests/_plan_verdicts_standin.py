"""A private stand-in for ``dropout_lab.analysis.plan_verdicts`` while that module is written in parallel.

It has the module's interface (names, columns, verdict words) with simple statistics (a t-interval in place of the
confidence sequence), so that the report tests run before the real module lands. :func:`install_if_missing` puts
it in place only when the real module cannot be imported; once it lands, this file is dead and can be deleted.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

HIGHER, LOWER, EQUIVALENT, UNDECIDED = "higher", "lower", "equivalent", "undecided"


def plan_table(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.assign(technique=runs["noise"]) if "noise" in runs else runs.copy()


def _select(table: pd.DataFrame, cell: dict) -> pd.DataFrame:
    mask = np.ones(len(table), dtype=bool)
    for key, value in cell.items():
        mask &= (table[key] == value).to_numpy()
    return table[mask]


def plan_looks(table, plan, looks: Sequence[int], seed_order: Sequence[int], metric: str | None = None):
    rows = []
    for n in looks:
        seeds = set(seed_order[:n])
        for c in plan.comparisons:
            column = metric or c.metric or plan.test_column
            t = _select(table, c.treatment).set_index("seed")[column]
            u = _select(table, c.control).set_index("seed")[column]
            d = (t - u).dropna()
            d = d[d.index.isin(seeds)].to_numpy(dtype=float)
            k, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
            se = sd / np.sqrt(k)
            half = stats.t.ppf(1 - plan.alpha / 2, k - 1) * se
            eq = stats.t.ppf(1 - plan.alpha, k - 1) * se
            p_diff = float(stats.ttest_1samp(d, 0).pvalue) if sd > 0 else float(mean == 0)
            p_eq = max(float(stats.t.sf((mean + c.margin) / se, k - 1)),
                       float(stats.t.cdf((mean - c.margin) / se, k - 1))) if sd > 0 else float(abs(mean) >= c.margin)
            rows.append({"look": looks.index(n) if isinstance(looks, list) else n, "n": n, "comparison": c.name,
                         "family": c.family, "margin": c.margin, "n_pairs": k, "mean_diff": mean, "sd": sd,
                         "cs_low": mean - half, "cs_high": mean + half, "eq_low": mean - eq, "eq_high": mean + eq,
                         "p_difference": p_diff, "p_equivalence": p_eq})
    out = pd.DataFrame(rows)
    for column in ("p_difference", "p_equivalence"):
        out[f"{column}_adj"] = out.groupby(["n", "family"])[column].transform(
            lambda p: multipletests(p, method=plan.correction)[1])
    out["verdict"] = [(HIGHER if r.mean_diff > 0 else LOWER) if r.p_difference_adj < plan.alpha
                      else EQUIVALENT if r.p_equivalence_adj < plan.alpha else UNDECIDED for r in out.itertuples()]
    out["decided"] = out["verdict"] != UNDECIDED
    return out


def plan_verdicts(looks, plan, design):
    last = looks[looks["n"] == looks["n"].max()].copy()
    why = {c.name: c.why for c in plan.comparisons}
    last["why"] = last["comparison"].map(why)
    last["seeds_taken"] = last["n"]
    last["max_hit"] = (~last["decided"]) & (design is not None and last["n"] >= (design.max if design else 0))
    needed = last["n"] * (2.8 * last["sd"] / last["margin"]) ** 2 / last["n"]
    last["seeds_needed"] = needed.where(last["max_hit"])
    return last[["comparison", "family", "margin", "why", "n_pairs", "mean_diff", "cs_low", "cs_high", "eq_low",
                 "eq_high", "p_difference_adj", "p_equivalence_adj", "verdict", "seeds_taken", "max_hit",
                 "seeds_needed"]].reset_index(drop=True)


def all_decided(looks, n: int) -> bool:
    return bool(looks[looks["n"] == n]["decided"].all())


def reference_claims(table, plan, metric: str | None = None, n_test: int = 10_000):
    rows = []
    for r in plan.references:
        x = _select(table, r.cell)[metric or plan.test_column].dropna().to_numpy(dtype=float)
        mean = float(x.mean())
        se = np.sqrt(x.var(ddof=1) / len(x) + mean * (1 - mean) / n_test)
        low, high = mean - 1.96 * se, mean + 1.96 * se
        verdict = ("above" if low > r.value + r.margin else "below" if high < r.value - r.margin
                   else "consistent" if r.value - r.margin <= low and high <= r.value + r.margin else "undecided")
        goal = ("met" if low > r.value else "not met" if high < r.value else "undecided") if r.goal else ""
        rows.append({"name": r.name, "value": r.value, "margin": r.margin, "why": r.why, "goal": goal,
                     "n": len(x), "mean": mean, "low": low, "high": high, "verdict": verdict})
    return pd.DataFrame(rows)


def install_if_missing() -> None:
    """Use the real module when it exists, else register this stand-in under its name."""
    name = "dropout_lab.analysis.plan_verdicts"
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        module = types.ModuleType(name)
        module.__dict__.update({k: v for k, v in globals().items() if not k.startswith("_")})
        sys.modules[name] = module
