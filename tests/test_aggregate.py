"""``dropout_lab.analysis.stats`` (against scipy/statsmodels or hand-computed values) and ``reports.wording``,
function by function."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp
from statsmodels.stats.multitest import multipletests

from dropout_lab.analysis import stats
from dropout_lab.analysis.stats import (
    excludes_zero,
    geometric_mean,
    holm,
    log_t_band,
    paired_differences,
    paired_log_ratios,
    paired_test,
    summarize_metrics,
    summarize_over_seeds,
    t_interval,
    tost_paired,
    two_way_anova,
    with_holm,
)
from dropout_lab.reports import wording
from dropout_lab.reports.wording import (
    ci_text,
    describe_test,
    direction,
    equivalence_text,
    holm_text,
    level_ci,
    pct,
    ratio_ci,
    significance,
)

A = [0.80, 0.82, 0.81, 0.83, 0.79]
B = [0.84, 0.85, 0.83, 0.86, 0.82]


def _runs() -> pd.DataFrame:
    return pd.DataFrame({"model": ["a"] * 5 + ["b"] * 5, "seed": list(range(5)) * 2, "test_acc": A + B})


def _scipy_interval(x: list[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    return sp.t.interval(confidence, len(x) - 1, loc=x.mean(), scale=sp.sem(x))


# ---------------------------------------------------------------- intervals and summaries

def test_t_interval_matches_scipy_and_follows_its_conventions() -> None:
    assert t_interval(B) == pytest.approx(_scipy_interval(B))
    assert t_interval(B, confidence=0.9) == pytest.approx(_scipy_interval(B, 0.9))
    assert t_interval([*B, np.nan]) == pytest.approx(_scipy_interval(B))  # NaNs ignored
    assert all(np.isnan(t_interval([0.5]))) and all(np.isnan(t_interval([0.5, np.nan]))) and all(
        np.isnan(t_interval([])))
    assert t_interval([0.7, 0.7, 0.7]) == (0.7, 0.7)  # all equal: zero width, not NaN


def test_geometric_mean_and_its_band_are_on_the_log_scale() -> None:
    assert geometric_mean([1.0, 4.0, 16.0]) == pytest.approx(4.0)
    values = [1.0, 2.0, 8.0, 4.0]
    low, high = _scipy_interval(np.log(values))
    assert log_t_band(values) == pytest.approx((math.exp(low), math.exp(high)))
    assert log_t_band([3.0, 3.0]) == pytest.approx((3.0, 3.0))


def test_summary_matches_scipy_t_interval() -> None:
    table = summarize_over_seeds(_runs(), ["model"], "test_acc").set_index("model")
    x = np.array(B)
    assert table.loc["b", "n"] == 5
    assert table.loc["b", "mean"] == pytest.approx(x.mean())
    assert table.loc["b", "std"] == pytest.approx(x.std(ddof=1))
    assert (table.loc["b", "ci_low"], table.loc["b", "ci_high"]) == pytest.approx(_scipy_interval(x))


def test_summary_intervals_of_constant_and_single_seeds() -> None:
    runs = pd.DataFrame({"model": ["c", "c", "c", "d"], "test_acc": [0.9, 0.9, 0.9, 0.8]})
    table = summarize_over_seeds(runs, ["model"], "test_acc").set_index("model")
    assert (table.loc["c", "ci_low"], table.loc["c", "ci_high"]) == (0.9, 0.9)
    assert np.isnan(table.loc["d", "ci_low"]) and np.isnan(table.loc["d", "ci_high"])


def test_summarize_metrics_gives_each_metric_its_t_interval() -> None:
    frame = _runs().assign(err=lambda f: 1 - f["test_acc"])
    table = summarize_metrics(frame, ["model"], ["test_acc", "err"]).set_index("model")
    assert list(table.columns) == ["test_acc_mean", "test_acc_ci_low", "test_acc_ci_high", "err_mean", "err_ci_low",
                                   "err_ci_high", "n"]
    assert table.loc["a", "n"] == 5 and table.loc["a", "test_acc_mean"] == pytest.approx(np.mean(A))
    assert (table.loc["a", "err_ci_low"], table.loc["a", "err_ci_high"]) == pytest.approx(
        _scipy_interval(1 - np.array(A)))


# ---------------------------------------------------------------- paired tests

def test_paired_test_is_scipys_paired_t_test() -> None:
    x, y = np.array(B), np.array(A) + np.array([0.01, -0.005, 0.0, 0.002, 0.004])
    out = paired_test(x - y)
    expected = sp.ttest_rel(x, y)
    assert out["n_pairs"] == 5 and out["mean_diff"] == pytest.approx((x - y).mean())
    assert out["t"] == pytest.approx(expected.statistic) and out["p_value"] == pytest.approx(expected.pvalue)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(_scipy_interval(x - y))
    assert out["cohens_dz"] == pytest.approx((x - y).mean() / (x - y).std(ddof=1))
    assert paired_test([*(x - y), np.nan])["p_value"] == pytest.approx(expected.pvalue)  # unpaired seed dropped


def test_paired_test_zero_variance_convention() -> None:
    shift = paired_test([0.01, 0.01, 0.01])
    assert (shift["t"], shift["p_value"]) == (np.inf, 0.0) and (shift["ci_low"], shift["ci_high"]) == (0.01, 0.01)
    assert paired_test([-0.01, -0.01])["t"] == -np.inf
    same = paired_test([0.0, 0.0, 0.0, 0.0])
    assert (same["t"], same["p_value"], same["ci_low"], same["ci_high"]) == (0.0, 1.0, 0.0, 0.0)
    assert np.isnan(shift["cohens_dz"]) and np.isnan(same["cohens_dz"])
    one = paired_test([0.02])
    assert one["n_pairs"] == 1 and one["mean_diff"] == 0.02
    assert all(np.isnan(one[k]) for k in ("ci_low", "ci_high", "t", "p_value", "cohens_dz"))


def test_paired_difference_matches_ttest_rel() -> None:
    runs = _runs()
    table = paired_differences(runs, ["model"], "test_acc", baseline={"model": "a"})
    (row,) = table.to_dict("records")
    a, b = np.array(A), np.array(B)
    expected = sp.ttest_rel(b, a)
    assert list(table.columns) == ["model", "n_pairs", "mean_diff", "ci_low", "ci_high", "t", "p_value", "cohens_dz"]
    assert row["model"] == "b" and row["n_pairs"] == 5
    assert row["mean_diff"] == pytest.approx((b - a).mean())
    assert row["p_value"] == pytest.approx(expected.pvalue)
    assert row["t"] == pytest.approx(expected.statistic)
    assert row["cohens_dz"] == pytest.approx((b - a).mean() / (b - a).std(ddof=1))


def test_pairs_only_on_shared_seeds() -> None:
    runs = _runs().drop(index=[9])  # b lacks seed 4
    (row,) = paired_differences(runs, ["model"], "test_acc", baseline={"model": "a"}).to_dict("records")
    assert row["n_pairs"] == 4


def test_paired_differences_of_identical_configurations_follow_the_convention() -> None:
    runs = pd.concat([_runs(), _runs().query("model == 'a'").assign(model="a2")], ignore_index=True)
    rows = paired_differences(runs, ["model"], "test_acc", baseline={"model": "a"}).set_index("model")
    assert rows.loc["a2", "p_value"] == 1.0 and rows.loc["a2", "mean_diff"] == 0.0


def test_paired_log_ratios_are_a_paired_t_test_on_logs() -> None:
    frame = pd.DataFrame({"cfg": ["x"] * 4 + ["y"] * 4, "seed": list(range(4)) * 2,
                          "secs": [1.0, 2.0, 1.5, 3.0, 2.2, 3.9, 3.1, 6.3]})
    (row,) = paired_log_ratios(frame, ["cfg"], "secs", {"cfg": "x"}).to_dict("records")
    x, y = np.log([1.0, 2.0, 1.5, 3.0]), np.log([2.2, 3.9, 3.1, 6.3])
    low, high = _scipy_interval(y - x)
    assert row["ratio"] == pytest.approx(geometric_mean(np.exp(y - x)))
    assert (row["ratio_ci_low"], row["ratio_ci_high"]) == pytest.approx((math.exp(low), math.exp(high)))
    assert row["p_value"] == pytest.approx(sp.ttest_rel(y, x).pvalue) and row["n_pairs"] == 4


# ---------------------------------------------------------------- TOST

def _tost_by_hand(d: np.ndarray, margin: float) -> float:
    se = d.std(ddof=1) / math.sqrt(len(d))
    return max(sp.t.sf((d.mean() + margin) / se, len(d) - 1), sp.t.cdf((d.mean() - margin) / se, len(d) - 1))


def test_tost_equivalent_when_the_90_ci_lies_inside_the_margin() -> None:
    d = np.array([0.001, -0.002, 0.0005, 0.0015, -0.001, 0.0, 0.002, -0.0005])
    out = tost_paired(d, 0.005)
    assert out["n"] == 8 and out["mean_diff"] == pytest.approx(d.mean())
    assert out["p_value"] == pytest.approx(_tost_by_hand(d, 0.005)) and out["p_value"] < 0.05
    assert out["equivalent"] is True
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(_scipy_interval(d, 0.90))
    assert -0.005 < out["ci_low"] and out["ci_high"] < 0.005
    assert equivalence_text(out, 0.005) == f"equivalent within ±0.5 pp (TOST p = {out['p_value']:.3g})"


def test_tost_not_equivalent_when_the_difference_is_large_or_noisy() -> None:
    far = tost_paired(np.array([0.010, 0.012, 0.009, 0.011, 0.013]), 0.005)
    assert far["p_value"] > 0.5 and far["equivalent"] is False
    assert equivalence_text(far, 0.005).startswith("not equivalent: 90% CI [")
    noisy = np.array([0.01, -0.012, 0.004, -0.003])
    out = tost_paired(noisy, 0.005)
    assert out["p_value"] == pytest.approx(_tost_by_hand(noisy, 0.005)) and not out["equivalent"]
    assert out["ci_low"] < -0.005 < 0.005 < out["ci_high"]
    assert equivalence_text(out, 0.005).startswith(
        f"inconclusive at this budget: 90% CI [{100 * out['ci_low']:.2f}, {100 * out['ci_high']:.2f}] pp reaches "
        "beyond ±0.5 pp")


def test_tost_zero_variance_follows_the_paired_test_convention() -> None:
    inside = tost_paired([0.001, 0.001, 0.001], 0.005)
    assert (inside["p_value"], inside["equivalent"], inside["ci_low"], inside["ci_high"]) == (0.0, True, 0.001, 0.001)
    outside = tost_paired([0.01, 0.01], 0.005)
    assert (outside["p_value"], outside["equivalent"]) == (1.0, False)
    alone = tost_paired([0.001], 0.005)
    assert np.isnan(alone["p_value"]) and not alone["equivalent"]
    assert equivalence_text(alone, 0.005).startswith("no equivalence test")


# ---------------------------------------------------------------- Holm

def test_holm_matches_hand_computed_values_and_statsmodels() -> None:
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.001]), [0.5, 0.002])
    p = np.array([0.2, 0.001, 0.04, 0.03, 0.6])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])


def test_holm_leaves_missing_p_values_out() -> None:
    out = holm([0.01, np.nan, 0.04])
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.04])  # two tests, not three


def test_with_holm_adds_p_holm() -> None:
    table = with_holm(pd.DataFrame({"name": ["x", "y", "z"], "p_value": [0.01, np.nan, 0.04]}))
    assert list(table.columns) == ["name", "p_value", "p_holm"]
    np.testing.assert_allclose(table["p_holm"], [0.02, np.nan, 0.04])
    assert with_holm(pd.DataFrame({"name": ["x"]}))["p_holm"].isna().all()


# ---------------------------------------------------------------- two-way ANOVA

def _factorial(interaction: float = 0.004, seeds: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    offset = rng.normal(0, 0.003, seeds)
    rows = [{"A": ca > 0, "B": cb > 0, "seed": s,
             "y": 0.85 + offset[s] + 0.01 * ca + 0.005 * cb + interaction * ca * cb + rng.normal(0, 0.002)}
            for s in range(seeds) for ca in (-0.5, 0.5) for cb in (-0.5, 0.5)]
    return pd.DataFrame(rows)


def test_two_way_anova_against_hand_computations_and_scipy() -> None:
    frame = _factorial()
    table, coef = two_way_anova(frame, "y", "A", "B", block="seed")
    rows = table.set_index("term")
    assert list(rows.index) == ["A", "B", "A x B", "seed", "residual"]
    cell = frame.groupby(["A", "B"])["y"].mean()
    contrast = cell[(True, True)] - cell[(False, True)] - cell[(True, False)] + cell[(False, False)]
    assert coef["estimate"] == pytest.approx(contrast)
    assert rows.loc["A x B", "SS"] == pytest.approx(5 * contrast ** 2 / 4)  # n per cell x contrast^2 / 4
    assert rows["SS"].sum() == pytest.approx(((frame["y"] - frame["y"].mean()) ** 2).sum())
    assert rows.loc["residual", "df"] == 20 - 1 - 3 - 4
    f = rows.loc["A x B", "F"]
    assert f == pytest.approx(rows.loc["A x B", "MS"] / rows.loc["residual", "MS"])
    assert f == pytest.approx(coef["t"] ** 2)
    assert rows.loc["A x B", "p_value"] == pytest.approx(sp.f.sf(f, 1, 12))
    wide = frame.pivot_table(index="seed", columns=["A", "B"], values="y")
    per_seed = wide[(True, True)] - wide[(False, True)] - wide[(True, False)] + wide[(False, False)]
    paired = sp.ttest_1samp(per_seed, 0.0)
    assert rows.loc["A x B", "F_rm"] == pytest.approx(paired.statistic ** 2)
    assert rows.loc["A x B", "p_rm"] == pytest.approx(paired.pvalue) and rows.loc["A x B", "df_rm_error"] == 4

    plain = two_way_anova(frame, "y", "A", "B")[0].set_index("term")
    groups = [g["y"].to_numpy() for _, g in frame.groupby(["A", "B"])]
    between = plain.loc[["A", "B", "A x B"], "SS"].sum()
    assert (between / 3) / plain.loc["residual", "MS"] == pytest.approx(sp.f_oneway(*groups).statistic)
    assert "F_rm" not in plain and plain.loc["residual", "df"] == 16


def test_two_way_anova_without_residual_df_tests_nothing() -> None:
    table, coef = two_way_anova(_factorial(seeds=1), "y", "A", "B", block="seed")
    assert list(table["term"]) == ["A", "B", "A x B", "residual"]  # a single seed is no block
    assert table["F"].isna().all() and np.isnan(coef["p_value"]) and np.isfinite(coef["estimate"])


# ---------------------------------------------------------------- wording

def test_number_wording() -> None:
    assert pct(0.0123) == "1.23 pp"
    assert ci_text(-0.001, 0.0234) == "95% CI [-0.10, 2.34] pp"
    assert level_ci(0.81234, 0.85) == "95% CI [0.8123, 0.8500]"
    assert ratio_ci(0.98765, 1.2345) == "95% CI [0.988, 1.23]"
    assert significance(0.0123) == "significant (p = 0.0123)" and significance(0.2) == "not significant (p = 0.2)"
    assert holm_text(0.001) == "Holm-adjusted significant (p = 0.001)" and holm_text(np.nan).startswith("no test")


def test_excludes_zero_and_direction() -> None:
    assert [excludes_zero({"ci_low": lo, "ci_high": hi}) for lo, hi in [(0.1, 0.2), (-0.2, -0.1), (-0.1, 0.1),
                                                                         (np.nan, np.nan)]] == [1, -1, 0, 0]
    row = pd.Series({"p_holm": 0.01, "mean_diff": -0.02, "ratio": 1.5})
    assert direction(row, "up", "down", "same") == "down"
    assert direction(row, "up", "down", "same", center=1.0, estimate="ratio") == "up"
    assert direction({"p_holm": 0.2, "mean_diff": -0.02}, "up", "down", "same") == "same"
    assert direction({"p_holm": np.nan, "mean_diff": 1.0}, "up", "down", "same") == "same"


def test_describe_test_words_a_paired_test() -> None:
    row = paired_test(np.array(B) - np.array(A))
    text = describe_test(row)
    assert text.startswith("+3.00 pp (95% CI [") and "paired t-test over 5 seeds" in text
    assert f"significant (p = {row['p_value']:.3g})" in text and f"Cohen's d_z = {row['cohens_dz']:.2f})" in text
    held = describe_test({**paired_test([0.01, 0.01]), "p_holm": 0.0}, "p_holm")
    assert "Holm-adjusted significant (p = 0)" in held and held.endswith("Cohen's d_z = n/a)")


def test_figures_draw_the_tables_interval_and_statistics_import_no_wording() -> None:
    import ast
    import inspect

    from dropout_lab.reports import figures

    assert figures.t_interval is stats.t_interval  # the bars of every figure are the tables' t-interval
    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(stats)))
                if isinstance(node, ast.ImportFrom)}
    assert "dropout_lab.reports.wording" not in imported and wording.ci_text(0.01, 0.02)  # words build on numbers


# ---------------------------------------------------------------- prediction, verdicts, robustness

def test_prediction_interval_is_wider_than_the_mean_interval_by_sqrt_n_plus_1() -> None:
    x = np.array(B)
    n, mean, s = len(x), x.mean(), x.std(ddof=1)
    half = sp.t.ppf(0.975, n - 1) * s * math.sqrt(1 + 1 / n)
    assert stats.prediction_interval(B) == pytest.approx((mean - half, mean + half))
    low, high = stats.prediction_interval(B)
    ci_low, ci_high = t_interval(B)
    assert (high - low) / (ci_high - ci_low) == pytest.approx(math.sqrt(n + 1))
    assert stats.prediction_interval([0.8, 0.8]) == (0.8, 0.8)
    assert all(np.isnan(stats.prediction_interval([0.8])))


def test_prediction_percentile_is_the_t_predictive_cdf_and_matches_the_interval() -> None:
    x = np.array(B)
    n, mean = len(x), x.mean()
    scale = x.std(ddof=1) * math.sqrt(1 + 1 / n)
    assert stats.prediction_percentile(B, 0.86) == pytest.approx(100 * sp.t.cdf((0.86 - mean) / scale, n - 1))
    low, high = stats.prediction_interval(B)
    assert stats.prediction_percentile(B, high) == pytest.approx(97.5)  # the interval's ends are its 2.5/97.5 points
    assert stats.prediction_percentile(B, low) == pytest.approx(2.5)
    assert stats.prediction_percentile(B, mean) == pytest.approx(50)
    assert [stats.prediction_percentile([0.8, 0.8], v) for v in (0.79, 0.8, 0.81)] == [0.0, 50.0, 100.0]
    assert np.isnan(stats.prediction_percentile([0.8, np.nan], 0.8))


def test_ratio_of_means_is_not_the_mean_of_ratios_and_its_bootstrap_is_paired_and_fixed() -> None:
    fast = np.array([0.05, 0.10, 0.10, 0.10, 0.10, 0.11, 0.09, 0.10])  # the first seed's reference pass is quick
    slow = 100 * fast * np.array([2.0, 1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0])
    result = stats.ratio_of_means(slow, fast)
    assert result["n"] == 8 and result["ratio"] == pytest.approx(slow.mean() / fast.mean())
    assert result["ratio"] < np.mean(slow / fast)  # the mean of per-seed ratios is pulled up by the quick seed
    boot = sp.bootstrap((slow, fast), lambda a, b, axis: a.mean(axis=axis) / b.mean(axis=axis), paired=True,
                        vectorized=True, rng=np.random.default_rng(stats.BOOTSTRAP_SEED))
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(tuple(boot.confidence_interval))
    assert result["ci_low"] < result["ratio"] < result["ci_high"]
    assert stats.ratio_of_means(slow, fast) == result  # a fixed seed: the same interval on every rebuild
    unpaired = sp.bootstrap((slow, fast), lambda a, b, axis: a.mean(axis=axis) / b.mean(axis=axis),
                            vectorized=True, rng=np.random.default_rng(stats.BOOTSTRAP_SEED)).confidence_interval
    assert result["ci_high"] - result["ci_low"] < unpaired.high - unpaired.low  # pairing removes the seeds' speed
    assert stats.ratio_of_means([2.0, 4.0], [1.0, 2.0]) == {"n": 2, "ratio": 2.0, "ci_low": 2.0, "ci_high": 2.0}
    one = stats.ratio_of_means([2.0, np.nan], [1.0, 1.0])
    assert one["n"] == 1 and one["ratio"] == 2.0 and np.isnan(one["ci_low"])


def test_paired_differences_with_a_margin_add_tost() -> None:
    runs = _runs()
    table = paired_differences(runs, ["model"], "test_acc", {"model": "a"}, margin=0.005).iloc[0]
    tost = tost_paired(np.array(B) - np.array(A), 0.005)
    assert table["tost_p"] == pytest.approx(tost["p_value"]) and table["equivalent"] == tost["equivalent"]
    assert (table["ci90_low"], table["ci90_high"]) == pytest.approx((tost["ci_low"], tost["ci_high"]))
    assert wording.row_equivalence_text(table, 0.005) == equivalence_text(tost, 0.005)
    assert "tost_p" not in paired_differences(runs, ["model"], "test_acc", {"model": "a"})


def test_difference_verdict_says_no_difference_only_when_equivalent() -> None:
    equal = stats.paired_with_tost([0.001, -0.001, 0.0005, 0.0, -0.0005], 0.005)
    noisy = stats.paired_with_tost([0.01, -0.012, 0.004, -0.003], 0.005)
    up = stats.paired_with_tost([0.02, 0.021, 0.019, 0.022], 0.005)
    assert stats.difference_verdict(equal, "p_value") == "equivalent"
    assert stats.difference_verdict(noisy, "p_value") == "inconclusive"
    assert stats.difference_verdict(up, "p_value") == "higher"
    assert stats.difference_verdict({**up, "mean_diff": -0.02}, "p_value") == "lower"
    assert stats.difference_verdict({**up, "p_holm": 0.2}) == "inconclusive"  # Holm decides when asked


def test_seed_flips_names_the_seeds_that_change_a_verdict() -> None:
    diff = pd.Series([0.01, 0.011, 0.009, 0.012, -0.05], index=[10, 11, 12, 13, 14])

    def word(d: pd.Series) -> str:
        return stats.difference_verdict(stats.paired_with_tost(d, 0.005), "p_value")

    assert word(diff) == "inconclusive"
    flips = stats.seed_flips(diff, word)
    assert flips == [(14, "higher")]
    assert wording.seed_flip_text(flips, "inconclusive").startswith(
        "One seed can change the verdict “inconclusive”: leaving out seed 14 alone changes it to “higher”")
    assert wording.seed_flip_text([], "higher") is None
    frame = pd.DataFrame({"seed": [0, 0, 1, 1, 2], "x": [1, 2, 3, 4, 0]})
    assert stats.seed_flips(frame, lambda f: "big" if f["x"].sum() > 5 else "small", seed="seed") == [(1, "small")]
    assert stats.seed_flips(diff.iloc[:2], lambda d: str(len(d))) == []  # one seed left: nothing to learn
