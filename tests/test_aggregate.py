"""The statistics helpers agree with scipy on known inputs."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dropout_lab.reports.stats import paired_differences, summarize_over_seeds, t_interval


def _runs() -> pd.DataFrame:
    a = [0.80, 0.82, 0.81, 0.83, 0.79]
    b = [0.84, 0.85, 0.83, 0.86, 0.82]
    return pd.DataFrame({"model": ["a"] * 5 + ["b"] * 5, "seed": list(range(5)) * 2, "test_acc": a + b})


def test_summary_matches_scipy_t_interval() -> None:
    table = summarize_over_seeds(_runs(), ["model"], "test_acc").set_index("model")
    x = np.array([0.84, 0.85, 0.83, 0.86, 0.82])
    low, high = stats.t.interval(0.95, 4, loc=x.mean(), scale=stats.sem(x))
    assert table.loc["b", "n"] == 5
    assert table.loc["b", "mean"] == pytest.approx(x.mean())
    assert table.loc["b", "std"] == pytest.approx(x.std(ddof=1))
    assert (table.loc["b", "ci_low"], table.loc["b", "ci_high"]) == pytest.approx((low, high))


def test_paired_difference_matches_ttest_rel() -> None:
    runs = _runs()
    table = paired_differences(runs, ["model"], "test_acc", baseline={"model": "a"})
    (row,) = table.to_dict("records")
    a = runs[runs.model == "a"].test_acc.to_numpy()
    b = runs[runs.model == "b"].test_acc.to_numpy()
    expected = stats.ttest_rel(b, a)
    assert row["model"] == "b" and row["n_pairs"] == 5
    assert row["mean_diff"] == pytest.approx((b - a).mean())
    assert row["p_value"] == pytest.approx(expected.pvalue)
    assert row["t"] == pytest.approx(expected.statistic)
    assert row["cohens_dz"] == pytest.approx((b - a).mean() / (b - a).std(ddof=1))


def test_pairs_only_on_shared_seeds() -> None:
    runs = _runs().drop(index=[9])  # b lacks seed 4
    (row,) = paired_differences(runs, ["model"], "test_acc", baseline={"model": "a"}).to_dict("records")
    assert row["n_pairs"] == 4


def test_interval_needs_two_values() -> None:
    assert all(np.isnan(t_interval([0.5])))
