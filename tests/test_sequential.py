"""Anytime-valid sequential verdicts: their error rates by simulation, and the declared plan on a run table.

The simulations run 10,000 sequential studies each (design min 10, max 60, batch 10: six looks, stopping at
the first look where the comparison is decided), vectorised with numpy; ``pytest -s`` prints the rates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from scipy.stats import t as student_t
from statsmodels.stats.multitest import multipletests

from dropout_lab.analysis import sequential
from dropout_lab.analysis.plan_verdicts import (
    EQUIVALENT,
    HIGHER,
    LOOK_COLUMNS,
    LOWER,
    UNDECIDED,
    VERDICT_COLUMNS,
    all_decided,
    plan_looks,
    plan_table,
    plan_verdicts,
    reference_claims,
)
from dropout_lab.analysis.stats import t_interval
from dropout_lab.config.analysis_plan import AnalysisPlan, Comparison, Reference, SeedDesign
from dropout_lab.errors import InvalidValueError
from dropout_lab.reports.plan_section import answer_text, reference_sentence

STUDIES = 10_000
ALPHA = 0.05
MARGIN = 0.5  # in units of the differences' sd
LOOKS = np.arange(10, 61, 10)


def _bound(alpha: float = ALPHA, studies: int = STUDIES) -> float:
    """The largest rate a level-alpha rule may show: alpha plus three Monte-Carlo standard errors."""
    return alpha + 3 * np.sqrt(alpha * (1 - alpha) / studies)


def _draw(kind: str, mean: float, seed: int, n: int = 60) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return mean + rng.standard_normal((STUDIES, n))
    return mean + rng.standard_t(5, (STUDIES, n)) / np.sqrt(5 / 3)  # t with 5 df, scaled to sd 1


def _looks(x: np.ndarray, looks: np.ndarray = LOOKS) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd (ddof 1) of each study's first n differences, for each look n: arrays (studies, looks)."""
    total, squares = np.cumsum(x, axis=1)[:, looks - 1], np.cumsum(x**2, axis=1)[:, looks - 1]
    mean = total / looks
    return mean, np.sqrt(np.maximum(squares - looks * mean**2, 0) / (looks - 1))


def _stopped(difference: np.ndarray, equivalence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per study, the verdict at the first decided look: (declared a difference, declared equivalence)."""
    decided = difference | equivalence
    first = np.argmax(decided, axis=1)
    rows = np.arange(len(decided))
    stopped = decided.any(axis=1)
    return stopped & difference[rows, first], stopped & ~difference[rows, first] & equivalence[rows, first]


def _anytime(x: np.ndarray, alpha: float = ALPHA) -> dict[str, np.ndarray]:
    mean, sd = _looks(x)
    return sequential.accumulate(sequential.evaluate(LOOKS, mean, sd, MARGIN, alpha, n_opt=int(LOOKS[0])), axis=1)


def _anytime_rates(x: np.ndarray) -> tuple[float, float]:
    tests = _anytime(x)
    difference, equivalence = _stopped(tests["p_difference"] < ALPHA, tests["p_equivalence"] < ALPHA)
    return float(difference.mean()), float(equivalence.mean())


def _naive_rates(x: np.ndarray) -> tuple[float, float]:
    """The fixed-n rule at every look: paired t-test at alpha, TOST (90% t-interval inside +-margin)."""
    mean, sd = _looks(x)
    se = sd / np.sqrt(LOOKS)
    difference = 2 * student_t.sf(np.abs(mean / se), LOOKS - 1) < ALPHA
    half = student_t.isf(ALPHA, LOOKS - 1) * se
    stopped_difference, _ = _stopped(difference, (mean - half > -MARGIN) & (mean + half < MARGIN))
    return float(stopped_difference.mean()), float(difference.any(axis=1).mean())


@pytest.mark.parametrize("kind", ["normal", "t5"])
def test_anytime_rule_keeps_type_one_error_at_any_look(kind: str) -> None:
    x = _draw(kind, 0.0, seed=11)
    declared, equivalent = _anytime_rates(x)
    ever = float((_anytime(x)["p_difference"][:, -1] < ALPHA).mean())  # looking on to 60 seeds, never stopping
    print(f"\n{kind}, mu = 0: anytime rule declares a difference in {declared:.4f} of {STUDIES} studies "
          f"(equivalent: {equivalent:.4f}); never stopping, at any of the 6 looks: {ever:.4f}; bound {_bound():.4f}")
    assert declared <= _bound() and ever <= _bound()


def test_the_naive_rule_repeated_at_every_look_exceeds_alpha() -> None:
    x = _draw("normal", 0.0, seed=11)
    stopping, ever = _naive_rates(x)
    print(f"\nnormal, mu = 0: fixed t-test at every look declares a difference in {stopping:.4f} (stopping at the "
          f"first decided look) and {ever:.4f} (at any of the 6 looks); bound {_bound():.4f}")
    assert ever > _bound()


@pytest.mark.parametrize("kind", ["normal", "t5"])
@pytest.mark.parametrize("sign", [1, -1])
def test_anytime_rule_rarely_calls_a_difference_at_the_margin_equivalent(kind: str, sign: int) -> None:
    declared, equivalent = _anytime_rates(_draw(kind, sign * MARGIN, seed=12 + sign))
    print(f"\n{kind}, mu = {sign * MARGIN:+} (the margin): false equivalence {equivalent:.4f} "
          f"(difference declared in {declared:.4f}); bound {_bound():.4f}")
    assert equivalent <= _bound()


@pytest.mark.parametrize("kind", ["normal", "t5"])
def test_a_two_sd_difference_is_called_higher_at_the_first_look(kind: str) -> None:
    x = _draw(kind, 2.0, seed=13)
    tests = _anytime(x)
    higher = (tests["p_difference"][:, 0] < ALPHA) & (_looks(x)[0][:, 0] > 0)
    print(f"\n{kind}, mu = 2 sd: 'higher' at the first look (10 seeds) in {higher.mean():.4f} of {STUDIES} studies")
    assert higher.mean() > 0.9


def test_the_t_calibration_fixes_the_plug_in_boundary_at_small_n() -> None:
    """Looking at every seed from 5 to 60 at alpha = 0.01 (e.g. after a Holm split), the plain plug-in boundary
    is anti-conservative; the Student-t calibrated one is not."""
    alpha, looks = 0.01, np.arange(5, 61)
    mean, sd = _looks(_draw("normal", 0.0, seed=14), looks)
    rho2 = sequential.mixture_rho2(alpha, 5)
    t = np.sqrt(looks) * mean / sd
    plug_in = (sequential.log_mixture(np.sqrt(looks) * t, looks, rho2) >= -np.log(alpha)).any(axis=1).mean()
    calibrated = (sequential.evaluate(looks, mean, sd, MARGIN, alpha, 5)["p_difference"] < alpha).any(axis=1).mean()
    print(f"\nnormal, mu = 0, alpha = 0.01, every seed from 5 to 60: plug-in sd {plug_in:.4f}, "
          f"t-calibrated {calibrated:.4f}; bound {_bound(alpha):.4f}")
    assert plug_in > _bound(alpha) >= calibrated


def test_zero_variance_and_too_few_differences_follow_the_paired_test_convention() -> None:
    none, shift, inside, one = (sequential.evaluate(n, m, s, 0.1, ALPHA, 10)
                                for n, m, s in ((10, 0.0, 0.0), (10, 0.2, 0.0), (10, 0.05, 0.0), (1, 0.2, np.nan)))
    assert (none["p_difference"], none["p_equivalence"], none["cs_low"], none["cs_high"]) == (1, 0, 0, 0)
    assert (shift["p_difference"], shift["p_equivalence"]) == (0, 1)
    assert (inside["p_difference"], inside["p_equivalence"]) == (0, 0)
    assert all(np.isnan(v) for v in one.values())
    assert sequential.summary([0.1] * 10) == (10, 0.1, 0.0)


def test_the_confidence_sequence_matches_the_closed_form_boundary_for_large_n() -> None:
    """At large n the t calibration vanishes: the interval is Robbins' m +- s c_n / n."""
    n, rho2 = 5000, sequential.mixture_rho2(ALPHA, 10)
    tests = sequential.evaluate(n, 0.0, 1.0, MARGIN, ALPHA, 10)
    closed = np.sqrt(2 * (1 + n * rho2) / (n**2 * rho2) * np.log(np.sqrt(1 + n * rho2) / ALPHA))
    assert tests["cs_high"] == pytest.approx(closed, rel=2e-3)
    assert tests["cs_high"] > closed  # and it is never narrower
    assert sequential.log_mixture(n * tests["cs_high"] / 1.0, n, rho2) > -np.log(ALPHA)


def test_seeds_needed_grows_with_noise_and_is_none_beyond_the_cap() -> None:
    few = sequential.seeds_needed(0.01, 0.005, 0.003, ALPHA, 10)
    more = sequential.seeds_needed(0.01, 0.02, 0.003, ALPHA, 10)
    assert few is not None and more is not None and 2 <= few < more
    tests = sequential.evaluate(more, 0.01, 0.02, 0.003, ALPHA, 10)
    assert tests["p_difference"] < ALPHA  # decided there, and not one seed earlier
    assert sequential.evaluate(more - 1, 0.01, 0.02, 0.003, ALPHA, 10)["p_difference"] >= ALPHA
    assert sequential.seeds_needed(0.003, 1.0, 0.003, ALPHA, 10, cap=500) is None


# ---------------------------------------------------------------- the plan on a run table

SEEDS = list(range(100, 130))
DESIGN = SeedDesign(first=100, min=10, max=30, batch=10)


def _runs() -> pd.DataFrame:
    """Per seed: a control cell, a big effect (+2 pp), an equal arm, a noisy one, and one with no noise."""
    rng = np.random.default_rng(5)
    base = 0.88 + 0.002 * rng.standard_normal(len(SEEDS))
    cells = {0.5: base, 0.3: base + 0.02 + 0.002 * rng.standard_normal(len(SEEDS)),
             0.4: base + 0.0003 * rng.standard_normal(len(SEEDS)),
             0.2: base + 0.001 + 0.02 * rng.standard_normal(len(SEEDS))}
    rows = [{"seed": s, "model.dropout_1": rate, "model.dropout_2": 0.5, "model.noise": "dropout",
             "best_test_acc": acc[i], "test_acc": acc[i] - 0.001} for rate, acc in cells.items()
            for i, s in enumerate(SEEDS)]
    rows += [{"seed": s, "model.dropout_1": 0.0, "model.dropout_2": 0.0, "model.noise": "gaussian",
              "best_test_acc": base[i] - 0.01, "test_acc": base[i] - 0.01} for i, s in enumerate(SEEDS)]
    rows.append({"seed": 999, "model.dropout_1": 0.3, "model.dropout_2": 0.5, "model.noise": "dropout",
                 "best_test_acc": 0.1, "test_acc": 0.1})  # a seed outside the design: never read
    return plan_table(pd.DataFrame(rows))


def _comparison(name: str, rate: float | str, family: str = "main", margin: float = 0.003) -> Comparison:
    return Comparison(name=name, treatment={"model.dropout_1": rate}, control={"model.dropout_1": 0.5},
                      margin=margin, why="a test margin", family=family)


def _plan(*comparisons: Comparison, references: list[Reference] | None = None) -> AnalysisPlan:
    return AnalysisPlan(comparisons=list(comparisons), references=references or [])


def test_a_difference_of_differences_pairs_all_four_cells_on_seeds() -> None:
    """``minus``: (treatment - control) - (minus.treatment - minus.control) per seed, on the seeds all four have."""
    from dropout_lab.config.analysis_plan import Difference

    table = _runs()
    contrast = Comparison(name="contrast", treatment={"model.dropout_1": 0.3}, control={"model.dropout_1": 0.5},
                          minus=Difference(treatment={"model.dropout_1": 0.4}, control={"model.dropout_1": 0.2}),
                          margin=0.003, why="a test margin")
    look = plan_looks(table, _plan(contrast), [30], SEEDS).iloc[0]
    acc = table.pivot_table(index="seed", columns="model.dropout_1", values="best_test_acc").loc[SEEDS]
    expected = (acc[0.3] - acc[0.5]) - (acc[0.4] - acc[0.2])
    assert look["n_pairs"] == 30 and look["mean_diff"] == pytest.approx(expected.mean())
    assert look["sd"] == pytest.approx(expected.std())
    missing = table[~((table["model.dropout_1"] == 0.2) & table["seed"].isin(SEEDS[:5]))]
    assert plan_looks(missing, _plan(contrast), [30], SEEDS).iloc[0]["n_pairs"] == 25


def test_the_plan_is_decided_look_by_look() -> None:
    table = _runs()
    plan = _plan(_comparison("big", 0.3), _comparison("same", "0.4"), _comparison("noisy", 0.2),
                 Comparison(name="no noise", treatment={"technique": "none"}, control={"model.dropout_1": 0.5},
                            margin=0.003, why="a test margin", family="other"))
    looks = plan_looks(table, plan, DESIGN.looks(), SEEDS)
    assert list(looks.columns) == list(LOOK_COLUMNS) and len(looks) == 3 * 4
    assert set(looks["n_pairs"]) == {10, 20, 30}  # each look reads its first n seeds only (not seed 999)
    first = looks[looks["look"] == 1].set_index("comparison")
    assert first.loc["big", "verdict"] == HIGHER and first.loc["no noise", "verdict"] == LOWER
    assert first.loc["same", "verdict"] == EQUIVALENT  # "0.4" selects the runs at 0.4
    for _, rows in looks.groupby("comparison"):  # anytime p-values never rise, decided stays decided
        assert (np.diff(rows["p_difference"]) <= 0).all() and (np.diff(rows["p_equivalence"]) <= 0).all()
        assert (np.diff(rows["decided"].astype(int)) >= 0).all()
        assert (np.diff(rows["cs_high"] - rows["cs_low"]) <= 0).all()
    assert not all_decided(looks, 30) and not all_decided(looks, 10)
    inside = (looks["eq_low"] > -looks["margin"]) & (looks["eq_high"] < looks["margin"])
    assert ((looks["p_equivalence"] < ALPHA) == inside).all()  # the bounds and the p-values say the same
    assert ((looks["p_difference"] < ALPHA) == ((looks["cs_low"] > 0) | (looks["cs_high"] < 0))).all()

    verdicts = plan_verdicts(looks, plan, DESIGN).set_index("comparison")
    assert verdicts.loc["big", "seeds_taken"] == 10 and not verdicts.loc["big", "max_hit"]
    assert np.isnan(verdicts.loc["big", "seeds_needed"])
    noisy = verdicts.loc["noisy"]
    assert noisy["verdict"] == UNDECIDED and noisy["max_hit"] and np.isnan(noisy["seeds_taken"])
    assert noisy["seeds_needed"] > 30 and noisy["why"] == "a test margin"
    assert not plan_verdicts(looks, plan, None)["max_hit"].any()  # a fixed design has no max to hit
    many = _plan(*[_comparison(f"c{i}", rate) for i, rate in enumerate([0.3, 0.4, "0.4", 0.3, 0.4, 0.3, 0.3, 0.4])])
    in_order = plan_verdicts(plan_looks(table, many, [10, 20, 30], SEEDS), many, DESIGN)["comparison"].tolist()
    assert in_order == [c.name for c in many.comparisons]  # the verdicts keep the plan's order

    decided = plan_looks(table, _plan(_comparison("big", 0.3), _comparison("same", 0.4)), DESIGN.looks(), SEEDS)
    assert all_decided(decided, 10)
    with pytest.raises(InvalidValueError, match="n=15"):
        all_decided(decided, 15)


def test_correction_applies_within_each_family_only() -> None:
    table = _runs()
    same_family = _plan(_comparison("big", 0.3), _comparison("noisy", 0.2))
    two_families = _plan(_comparison("big", 0.3), _comparison("noisy", 0.2, family="b"))
    joint = plan_looks(table, same_family, [10, 20], SEEDS)
    apart = plan_looks(table, two_families, [10, 20], SEEDS)
    for _, rows in joint.groupby("look"):
        for kind in ("difference", "equivalence"):
            expected = multipletests(rows[f"p_{kind}"], method="holm")[1]
            np.testing.assert_allclose(rows[f"p_{kind}_adj"], expected)
    np.testing.assert_allclose(apart["p_difference_adj"], apart["p_difference"])
    assert (joint["p_difference_adj"] >= apart["p_difference_adj"]).all()
    assert (joint["p_difference_adj"] > apart["p_difference_adj"]).any()
    bonferroni = plan_looks(table, AnalysisPlan(comparisons=same_family.comparisons, correction="bonferroni"),
                            [10], SEEDS)
    np.testing.assert_allclose(bonferroni["p_difference_adj"], np.minimum(1, 2 * bonferroni["p_difference"]))


def test_selectors_and_metrics_name_what_is_wrong() -> None:
    table = _runs()
    wrong = Comparison(name="x", treatment={"model.dropout": 0.3}, control={"model.dropout_1": 0.5}, margin=0.003,
                       why="w")
    with pytest.raises(InvalidValueError, match=r"plan.comparisons\[0\].treatment=.*model.dropout"):
        plan_looks(table, _plan(wrong), [10], SEEDS)
    with pytest.raises(InvalidValueError, match=r"plan.comparisons\[0\].metric='val_acc'"):
        plan_looks(table, _plan(_comparison("big", 0.3)), [10], SEEDS, metric="val_acc")
    with pytest.raises(InvalidValueError, match="looks="):
        plan_looks(table, _plan(_comparison("big", 0.3)), [20, 10], SEEDS)
    nan_cell = table.assign(**{"model.noise": table["model.noise"].where(table["model.dropout_1"] != 0.3)})
    none = Comparison(name="n", treatment={"model.noise": None}, control={"model.dropout_1": 0.5}, margin=0.003,
                      why="w")
    last_epoch = plan_looks(nan_cell, _plan(none), [10], SEEDS, metric="test_acc")  # None selects the NaN runs
    assert last_epoch.loc[0, "verdict"] == HIGHER
    assert last_epoch.loc[0, "mean_diff"] == pytest.approx(
        plan_looks(table, _plan(_comparison("big", 0.3)), [10], SEEDS).loc[0, "mean_diff"])
    assert set(table.loc[table["model.dropout_2"] == 0, "technique"]) == {"none"}


def test_a_printed_run_is_judged_by_the_prediction_interval_for_one_run() -> None:
    """A printed number is one run on the same test set: inside, above or below the seeds' prediction interval for one
    run (mean +- t sd sqrt(1 + 1/n), no test-set error), always decided from two seeds, with its percentile."""
    table = _runs()
    values = table[(table["model.dropout_1"] == 0.5) & table["seed"].isin(SEEDS)]["best_test_acc"].to_numpy()
    n, mean, sd = len(values), values.mean(), values.std(ddof=1)
    half = student_t.ppf(1 - ALPHA / 2, n - 1) * sd * np.sqrt(1 + 1 / n)
    printed = {"inside": mean + 0.5 * half, "above": mean + 1.2 * half, "below": mean - 1.2 * half}
    plan = _plan(references=[Reference(name=name, cell={"model.dropout_1": 0.5}, value=value, why="one printed run")
                             for name, value in printed.items()])
    claims = reference_claims(table[table["seed"].isin(SEEDS)], plan).set_index("name")
    assert claims["verdict"].to_dict() == {"inside": "consistent", "above": "above", "below": "below"}
    assert (claims["interval"] == "one run").all() and (claims["n"] == n).all()
    assert claims["low"].tolist() == pytest.approx([mean - half] * 3) and claims["high"].tolist() == pytest.approx(
        [mean + half] * 3)
    # Where each falls among single runs: the t predictive distribution's cdf, beyond 97.5 only when above it.
    expected = [100 * student_t.cdf((v - mean) / (sd * np.sqrt(1 + 1 / n)), n - 1) for v in printed.values()]
    assert claims["percentile"].tolist() == pytest.approx(expected)
    assert 50 < claims.loc["inside", "percentile"] < 97.5 < claims.loc["above", "percentile"]
    assert claims.loc["below", "percentile"] < 2.5
    # The mean's interval widened by the test set's error (the old check) still holds "above": it left it undecided.
    wide = norm.isf(ALPHA / 4) * np.sqrt(mean * (1 - mean) / 10_000)
    assert claims.loc["above", "value"] < t_interval(values, confidence=1 - ALPHA / 2)[1] + wide

    one_seed = reference_claims(table[table["seed"] == SEEDS[0]], plan).iloc[0]
    assert one_seed["verdict"] == UNDECIDED and one_seed["n"] == 1 and np.isnan(one_seed["percentile"])


def test_a_goal_is_judged_by_the_mean_with_the_test_sets_own_error() -> None:
    table = _runs()
    mean = table[(table["model.dropout_1"] == 0.5) & table["seed"].isin(SEEDS)]["best_test_acc"].mean()
    goals = [Reference(name="goal", cell={"model.dropout_1": 0.3}, value=0.89, why="w", goal=True),
             Reference(name="high goal", cell={"model.dropout_1": 0.5}, value=0.95, why="w", goal=True),
             Reference(name="near goal", cell={"model.dropout_1": 0.5}, value=round(mean, 3), margin=0.01, why="w",
                       goal=True)]  # an older file's margin: accepted, not read
    claims = reference_claims(table[table["seed"].isin(SEEDS)], _plan(references=goals)).set_index("name")
    assert claims["verdict"].tolist() == ["met", "not met", UNDECIDED]
    assert (claims["interval"] == "mean").all() and claims["percentile"].isna().all()
    values = table[(table["model.dropout_1"] == 0.5) & table["seed"].isin(SEEDS)]["best_test_acc"]
    seeds_low, seeds_high = t_interval(values, confidence=1 - ALPHA / 2)
    test_error = norm.isf(ALPHA / 4) * np.sqrt(mean * (1 - mean) / 10_000)
    assert claims.loc["near goal", "low"] == pytest.approx(seeds_low - test_error)
    assert claims.loc["near goal", "high"] == pytest.approx(seeds_high + test_error)

    # Every seed the same: no spread over seeds, but the shared test set still leaves +-0.6 pp.
    flat = pd.DataFrame({"seed": SEEDS[:10], "cell": "a", "best_test_acc": 0.85})
    near = _plan(references=[Reference(name="near", cell={"cell": "a"}, value=0.855, why="w", goal=True)])
    claim = reference_claims(flat, near).iloc[0]
    assert claim["verdict"] == UNDECIDED and claim["high"] - claim["low"] > 0.01
    sequential_claim = reference_claims(flat, near, design=DESIGN).iloc[0]
    assert sequential_claim["low"] == pytest.approx(claim["low"])  # zero spread: only the test set's error
    printed = reference_claims(flat, _plan(references=[Reference(name="p", cell={"cell": "a"}, value=0.855,
                                                                 why="w")])).iloc[0]
    assert printed["verdict"] == "above" and printed["low"] == printed["high"] == 0.85  # no spread, no error
    with pytest.raises(InvalidValueError, match=r"plan.references\[0\].cell"):
        reference_claims(flat, _plan(references=[Reference(name="x", cell={"model": "a"}, value=0.8, why="w")]))


NO_VERDICTS = pd.DataFrame(columns=list(VERDICT_COLUMNS))


def _exact(n: int, mean: float, sd: float) -> pd.DataFrame:
    """n seeds of one cell whose values have exactly this mean and sd (ddof 1)."""
    z = np.random.default_rng(n).standard_normal(n)
    z = (z - z.mean()) / z.std(ddof=1)
    return pd.DataFrame({"seed": range(n), "cell": "a", "best_test_acc": mean + sd * z})


@pytest.mark.parametrize("design", [None, SeedDesign(first=0, min=10, max=10, batch=10)])
def test_an_undecided_goal_says_the_seeds_that_would_decide_it_or_that_none_would(design: SeedDesign | None) -> None:
    """At the seeds it names, the same mean and sd decide the goal, and one seed fewer does not; where the test set's
    error alone reaches the goal, no number of seeds is named, and the sentence says only a larger test set would."""
    plan = _plan(references=[Reference(name="goal", cell={"cell": "a"}, value=0.89, why="w", goal=True)])
    claim = reference_claims(_exact(10, 0.88, 0.01), plan, design=design).iloc[0]
    assert claim["verdict"] == UNDECIDED and bool(claim["max_hit"]) == (design is not None)
    needed = int(claim["seeds_needed"])
    assert needed > 10
    assert reference_claims(_exact(needed, 0.88, 0.01), plan, design=design).iloc[0]["verdict"] == "not met"
    assert reference_claims(_exact(needed - 1, 0.88, 0.01), plan, design=design).iloc[0]["verdict"] == UNDECIDED
    assert f"would need about {needed} seeds" in answer_text(NO_VERDICTS, pd.DataFrame([claim]), plan)

    near = reference_claims(_exact(10, 0.886, 0.001), plan, design=design).iloc[0]
    assert near["verdict"] == UNDECIDED and 0.004 < near["test_error"] and np.isnan(near["seeds_needed"])
    assert "only a larger test set" in reference_sentence(near, plan.references[0], ALPHA)
    met = reference_claims(_exact(30, 0.91, 0.002), plan, design=design).iloc[0]
    assert met["verdict"] == "met" and np.isnan(met["seeds_needed"]) and not met["max_hit"]
    assert "would need" not in answer_text(NO_VERDICTS, pd.DataFrame([met]), plan)
