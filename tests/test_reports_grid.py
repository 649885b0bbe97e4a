"""Grid-study reports (rates_grid, epochs, factorial): synthetic inputs, verdict flips, statistics, end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from itertools import product
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from scipy import stats

from dropout_lab.config.study_spec import StudySpec, load_spec
from dropout_lab.reports.analyses import ANALYSES, epochs, factorial, rates_grid
from dropout_lab.reports.build import build_report
from dropout_lab.reports.inputs import StudyData

optuna.logging.set_verbosity(optuna.logging.WARNING)

SEEDS = [0, 1, 2, 3, 4]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def study_data(grid: dict, runs: pd.DataFrame, curves: pd.DataFrame | None = None, epochs_: int = 1) -> StudyData:
    """A StudyData from hand-made tables, shaped like ``load_study_data``'s."""
    spec = StudySpec(name="synthetic", question="q?", epochs=epochs_, grid=grid, seeds=SEEDS)
    runs = runs.assign(trial=range(len(runs)), state="COMPLETE", status="completed", wall_time_s=1.0)
    if curves is None:
        curves = pd.DataFrame(columns=["trial", "epoch", "train_loss", "val_loss", "val_acc", "seconds"])
    return StudyData(spec=spec, runs=runs, all_runs=runs, curves=curves)


# ---------------------------------------------------------------- rates_grid

RATES = [0.1, 0.3, 0.5, 0.7]


def rates_data(asymmetry: float, noise: float = 0.002, rng_seed: int = 0, p2_best: float = 0.5) -> StudyData:
    """acc = 0.88 - 0.05 (p1 - 0.3)^2 - 0.05 (p2 - p2_best)^2 + asymmetry (p2 - p1) + seed effect + noise."""
    rng = np.random.default_rng(rng_seed)
    seed_effect = rng.normal(0, 0.003, len(SEEDS))
    rows = [{"model.dropout_1": p1, "model.dropout_2": p2, "seed": s,
             "test_acc": 0.88 - 0.05 * (p1 - 0.3) ** 2 - 0.05 * (p2 - p2_best) ** 2 + asymmetry * (p2 - p1)
             + seed_effect[s] + rng.normal(0, noise)}
            for p1, p2, s in product(RATES, RATES, SEEDS)]
    return study_data({"model.dropout_1": RATES, "model.dropout_2": RATES}, pd.DataFrame(rows))


def test_rates_grid_tables_figures_and_lower_first_verdict() -> None:
    report = rates_grid.analyze(rates_data(asymmetry=0.02))
    tables = {t.name: t.frame for t in report.tables}
    assert {"cells", "swap_asymmetry"} <= set(tables)
    swaps = tables["swap_asymmetry"]
    assert {"p_low", "p_high", "mean_diff", "ci_low", "ci_high", "t", "p_value", "cohens_dz", "p_holm"} <= set(swaps)
    assert len(swaps) == 6 and (swaps["p_low"] < swaps["p_high"]).all() and (swaps["p_holm"] >= swaps["p_value"]).all()
    assert len(tables["cells"]) == 16 and (tables["cells"]["n"] == 5).all()
    heat = {f.name: f.figure for f in report.figures}["test_accuracy_heatmap"].axes[0]
    assert heat.get_ylabel() == "p1 (first hidden layer)" and heat.get_xlabel().startswith("p2 (second")
    answer = report.answer
    assert "holds" in answer and "in 6 of 6 swap pairs (100%)" in answer and "(it holds pair by pair)" in answer
    assert report.conclusions[1].startswith("Best cell: p1 = 0.1, p2 = 0.7")  # 0.888 without noise

    reversed_ = rates_grid.analyze(rates_data(asymmetry=-0.02)).answer
    assert "is reversed" in reversed_ and "in 0 of 6 swap pairs (0%)" in reversed_
    symmetric = rates_grid.analyze(rates_data(asymmetry=0.0, p2_best=0.3)).answer  # acc(p1, p2) = acc(p2, p1)
    assert "is not supported: the mean asymmetry is equivalent within ±0.5 pp" in symmetric
    assert "6 are equivalent and 0 inconclusive" in symmetric
    # A small asymmetry, noisy runs: it holds on average, but no single pair backs it, and the answer says so.
    weak = rates_grid.analyze(rates_data(asymmetry=0.002, noise=0.004))
    assert "holds on average over the swap pairs" in weak.answer
    assert "0 of 6 support it significantly" in weak.answer and "(not a rule: only 0 of 6 pairs back it)" in weak.answer
    swaps = {t.name: t.frame for t in weak.tables}["swap_asymmetry"]
    assert set(swaps["better"]) == {"inconclusive"} and {"tost_p", "equivalent"} <= set(swaps)
    noisy = rates_grid.analyze(rates_data(asymmetry=0.0, noise=0.01, p2_best=0.3)).answer
    assert "is neither supported nor refuted: the mean asymmetry is inconclusive at this budget" in noisy


def test_rates_grid_names_a_seed_that_alone_changes_the_verdict() -> None:
    data = rates_data(asymmetry=0.0, p2_best=0.3, noise=0.0005)  # symmetric: "not supported" (equivalent)
    assert rates_grid.seed_robustness(data.runs, 0.005) is None
    # Seed 4 alone favours the lower rate first by 3 pp per 0.1 of rate gap: with it the verdict changes.
    runs = data.runs.copy()
    four = runs["seed"] == 4
    runs.loc[four, "test_acc"] += 0.3 * (runs.loc[four, "model.dropout_2"] - runs.loc[four, "model.dropout_1"])
    text = rates_grid.seed_robustness(runs, 0.005)
    assert text is not None and "leaving out seed 4 alone changes it to “not supported”" in text
    assert text in rates_grid.analyze(replace(data, runs=runs)).conclusions


def test_swap_table_matches_scipy_paired_t_test() -> None:
    data = rates_data(asymmetry=0.01, noise=0.004)
    row = rates_grid.swap_table(rates_grid.swap_differences(data.runs)).iloc[0]
    wide = data.runs.pivot_table(index="seed", columns=["model.dropout_1", "model.dropout_2"], values="test_acc")
    x, y = wide[(row["p_low"], row["p_high"])], wide[(row["p_high"], row["p_low"])]
    test = stats.ttest_rel(x, y)
    assert row["t"] == pytest.approx(test.statistic) and row["p_value"] == pytest.approx(test.pvalue)
    assert row["cohens_dz"] == pytest.approx((x - y).mean() / (x - y).std(ddof=1))


# ---------------------------------------------------------------- epochs

#: The stored config's rates of each overlay, as the run table has them (``model.dropout_1/2`` columns).
RATES_OF = {"chapter": 0.5, "no_dropout": 0.0}


def epochs_data(dropout_better_late: bool = True, n_epochs: int = 30, rng_seed: int = 1) -> StudyData:
    """No dropout learns fast then overfits; dropout learns slower but keeps improving (or the reverse)."""
    rng = np.random.default_rng(rng_seed)
    runs, curves, trial = [], [], 0
    for experiment, s in product(["chapter", "no_dropout"], SEEDS):
        fast = (experiment == "no_dropout") == dropout_better_late
        e = np.arange(1, n_epochs + 1)
        val_acc = (0.89 - 0.10 * np.exp(-e / 2) - 0.0008 * e if fast else 0.89 - 0.12 * np.exp(-e / 5))
        val_acc = val_acc + rng.normal(0, 0.001, n_epochs)
        train_loss = 0.6 * np.exp(-e / (3 if fast else 6)) + (0.05 if fast else 0.3)
        val_loss = 0.7 - 2 * (val_acc - 0.8)
        curves.append(pd.DataFrame({"trial": trial, "epoch": e, "train_loss": train_loss, "val_loss": val_loss,
                                    "val_acc": val_acc, "seconds": 1.0, "experiment": experiment, "seed": s}))
        runs.append({"experiment": experiment, "model.dropout_1": RATES_OF[experiment],
                     "model.dropout_2": RATES_OF[experiment], "seed": s, "test_acc": val_acc[-1] - 0.005,
                     "val_acc": val_acc[-1], "test_loss": val_loss[-1]})
        trial += 1
    return study_data({"experiment": ["chapter", "no_dropout"]}, pd.DataFrame(runs),
                      pd.concat(curves, ignore_index=True), n_epochs)


def test_epochs_report_curves_best_epochs_and_where_dropout_pays() -> None:
    report = epochs.analyze(epochs_data(True))
    tables = {t.name: t.frame for t in report.tables}
    assert {"test_accuracy", "best_epochs", "per_epoch_val_acc"} <= set(tables)
    best = tables["best_epochs"]
    assert set(best["criterion"]) == {"by val_acc", "by val_loss"}
    assert set(best["configuration"]) == {"dropout 0.5/0.5", "no dropout"}
    assert {"mean", "ci_low", "ci_high", "n"} <= set(best)
    per_epoch = tables["per_epoch_val_acc"]
    assert len(per_epoch) == 30 and {"epoch", "mean_diff", "p_value", "p_holm", "cohens_dz"} <= set(per_epoch)
    figures = {f.name: f.figure for f in report.figures}
    assert {"curves", "generalization_gap", "val_acc_difference"} <= set(figures)
    legend = [t.get_text() for t in figures["curves"].axes[0].get_legend().get_texts()]
    assert legend == ["dropout 0.5/0.5", "no dropout"]
    assert [ax.get_ylabel() for ax in figures["curves"].axes] == [
        "training loss (dropout on)", "validation loss", "validation accuracy"]
    assert any("dropout ON" in note for note in report.notes)

    # The headline epoch comes from the smoothed curve (significantly ahead from there on) and needs the
    # last-10-epoch window's paired test too; the answer adds the test accuracy at both budgets.
    smooth = tables["per_epoch_val_acc_smoothed"]
    first = epochs.first_epoch_from_which(smooth["epoch"], (smooth["mean_diff"] > 0) & (smooth["p_value"] < 0.05))
    above = epochs.first_epoch_from_which(smooth["epoch"], smooth["mean_diff"] > 0)
    assert report.answer.startswith(f"dropout 0.5/0.5 pays against no dropout from epoch {first} of 30 on (smoothed "
                                    "validation accuracy significantly ahead at every later epoch). At the fixed "
                                    "budget of 30 epochs its test accuracy is significantly higher (")
    pays = report.conclusions[1]
    assert pays.startswith(f"dropout 0.5/0.5 vs no dropout over 30 epochs: dropout pays from epoch {first} on: its "
                           f"smoothed mean validation accuracy is significantly above at every epoch from {first} on "
                           f"(above in mean from epoch {above} on), and over the last 10 epochs its per-seed mean "
                           "validation accuracy differs by +")
    assert "epoch by epoch (unsmoothed) it is significantly ahead (paired" in pays
    assert any(c.startswith("Fixed budget (every run's last epoch, 30): test accuracy, dropout 0.5/0.5 minus no "
                            "dropout, +") and c.endswith("significantly higher.") for c in report.conclusions)
    assert any(c.startswith("Early stopping (each run at its best-validation epoch): not answerable from this store")
               for c in report.conclusions)  # these synthetic runs, like older stores, have no best_* columns

    # 3-epoch windows for 30 epochs: defined from epoch 3
    assert smooth["epoch"].min() == 3 and len(smooth) == 28
    from_epoch = epochs.first_epoch_from_which(smooth["epoch"], smooth["mean_diff"] > 0)
    assert any("trailing 3 epochs" in c and f"above no dropout's from epoch {from_epoch} on" in c
               for c in report.conclusions)
    assert "val_acc_difference_smoothed" in figures

    flipped_report = epochs.analyze(epochs_data(False))
    assert flipped_report.answer.startswith("No epoch of 30 from which dropout 0.5/0.5 pays against no dropout is "
                                            "supported. At the fixed budget of 30 epochs its test accuracy is "
                                            "significantly lower (")
    flipped = flipped_report.conclusions[1]
    assert "no epoch from which dropout pays is supported: its smoothed mean validation accuracy is not above at " \
           "the last epoch (30)" in flipped and "it is never significantly ahead" in flipped
    assert any("not above no dropout's at the last epoch" in c for c in flipped_report.conclusions)


def test_epochs_answers_early_stopping_and_clips_best_epochs() -> None:
    data = epochs_data(True)
    data.runs["best_test_acc"] = data.runs["test_acc"] - 0.0005 * data.runs["seed"]
    data.runs["best_epoch"] = np.where(data.runs["experiment"] == "chapter", 29 + data.runs["seed"] % 2, 8)
    report = epochs.analyze(data)
    (early,) = [c for c in report.conclusions if c.startswith("Early stopping (each run at its best-validation")]
    assert "; with early stopping (each run at its best-validation epoch) it is " in report.answer
    assert "test accuracy, dropout 0.5/0.5 minus no dropout, +" in early
    assert "the best-validation epoch is 29.4 vs 8.0 on average (paired difference +21.4 epochs" in early
    tables = {t.name: t.frame for t in report.tables}
    assert "mean_best_test_acc" in tables["test_accuracy"]
    best = tables["best_epochs"]
    assert (best["ci_low"] >= 1).all() and (best["ci_high"] <= 30).all()  # clipped to the epochs that ran
    assert best["ci_high"].max() == 30


def test_dropout_pays_needs_the_window_not_a_last_point() -> None:
    # Dropout ahead by 1 pp for 25 epochs, then behind by a whisker at the last 5: the smoothed curve's last
    # point is below, so no epoch is named, although a last-point-only reading of earlier epochs would name one.
    data = epochs_data(True, n_epochs=30)
    curves = data.curves
    late = (curves["epoch"] > 25) & (curves["experiment"] == "chapter")
    curves.loc[late, "val_acc"] = curves.loc[late, "val_acc"] - 0.05
    report = epochs.analyze(data)
    assert report.answer.startswith("No epoch of 30 from which dropout 0.5/0.5 pays against no dropout is supported.")
    assert "no epoch from which dropout pays is supported" in report.conclusions[1]
    window = epochs.window_test(epochs.finished_curves(data, data.runs.assign(
        configuration=epochs.config_labels(data, data.runs).to_numpy())), "dropout 0.5/0.5", "no dropout", 0.005)
    assert window["window"] == 10 and {"tost_p", "equivalent", "p_value"} <= set(window)


def test_smoothed_curves_average_each_run_over_its_trailing_window() -> None:
    curves = pd.DataFrame({"trial": [0, 0, 0, 1, 1, 1], "epoch": [1, 2, 3, 1, 2, 3],
                           "val_acc": [0.1, 0.2, 0.6, 0.5, 0.5, 0.8]})
    out = epochs.smoothed_curves(curves, 2)
    assert out["epoch"].tolist() == [2, 3, 2, 3]
    assert out["val_acc"].tolist() == pytest.approx([0.15, 0.4, 0.5, 0.65])


def test_first_epoch_from_which_needs_the_condition_to_last() -> None:
    e = pd.Series([1, 2, 3, 4, 5])
    assert epochs.first_epoch_from_which(e, pd.Series([False, True, False, True, True])) == 4
    assert epochs.first_epoch_from_which(e, pd.Series([True] * 5)) == 1
    assert epochs.first_epoch_from_which(e, pd.Series([True, True, True, True, False])) is None


# ---------------------------------------------------------------- factorial

FACTORIAL_GRID = {"experiment": ["no_dropout", "chapter"], "optim.weight_decay": [0.0, 0.0005]}


def factorial_data(neither: float, dropout: float, wd: float, both: float, noise: float = 0.0005,
                   rng_seed: int = 2) -> StudyData:
    """Four cell means, a per-seed offset shared by the cells, independent noise per run."""
    rng = np.random.default_rng(rng_seed)
    offsets = rng.normal(0, 0.003, len(SEEDS))
    means = {("no_dropout", 0.0): neither, ("chapter", 0.0): dropout, ("no_dropout", 0.0005): wd,
             ("chapter", 0.0005): both}
    rows = [{"experiment": exp, "optim.weight_decay": w, "model.dropout_1": RATES_OF[exp],
             "model.dropout_2": RATES_OF[exp], "seed": s, "test_acc": m + offsets[s] + rng.normal(0, noise)}
            for (exp, w), m in means.items() for s in SEEDS]
    return study_data(FACTORIAL_GRID, pd.DataFrame(rows))


@pytest.mark.parametrize(("cells", "word"), [
    ((0.850, 0.860, 0.855, 0.865), "additive"),      # both = sum of singles
    ((0.850, 0.870, 0.865, 0.875), "diminishing"),   # +2.5 < 2 + 1.5, but beats dropout alone
    ((0.850, 0.870, 0.865, 0.866), "cancelling"),    # no better than dropout alone
    ((0.850, 0.855, 0.855, 0.875), "synergistic"),   # more than the sum
])
def test_factorial_verdict_follows_the_numbers(cells: tuple[float, ...], word: str) -> None:
    report = factorial.analyze(factorial_data(*cells))
    assert report.answer.startswith(f"The effects of dropout and weight decay on test accuracy are {word}:")
    tables = {t.name: t.frame for t in report.tables}
    effects = tables["effects"].set_index("effect")
    expected = cells[3] - cells[2] - cells[1] + cells[0]
    assert effects.loc["interaction", "mean_diff"] == pytest.approx(expected, abs=0.0015)
    assert f"{100 * effects.loc['both together', 'mean_diff']:+.2f} pp" in report.answer


@pytest.mark.slow  # over 5 s
def test_factorial_calls_additive_only_when_the_interaction_is_equivalent_to_zero() -> None:
    # Same cell means as the additive case, 8x the noise: the interaction's CI contains 0, yet TOST cannot
    # say it is within ±0.5 pp, so "additive" would say more than the data show.
    report = factorial.analyze(factorial_data(0.850, 0.860, 0.855, 0.865, noise=0.004, rng_seed=0))
    assert report.answer.startswith("The effects of dropout and weight decay on test accuracy are not shown to be "
                                    "additive or interacting (inconclusive at this budget):")
    assert "inconclusive at this budget: 90% CI [" in report.answer
    effects = {t.name: t.frame for t in report.tables}["effects"].set_index("effect")
    assert not effects.loc["interaction", "equivalent"] and {"tost_p", "ci90_low", "ci90_high"} <= set(effects)
    additive = factorial.analyze(factorial_data(0.850, 0.860, 0.855, 0.865))
    assert "equivalent within ±0.5 pp (TOST p = " in additive.answer
    assert any("±0.5 pp" in n for n in additive.notes) and any(n.startswith("Selection: ") for n in additive.notes)


@pytest.mark.slow  # over 5 s
def test_factorial_names_a_seed_that_alone_changes_the_verdict() -> None:
    report = factorial.analyze(factorial_data(0.850, 0.860, 0.855, 0.865, rng_seed=5))
    assert report.answer.startswith("The effects of dropout and weight decay on test accuracy are additive")
    assert report.conclusions[1] == ("One seed can change the verdict “additive”: leaving out seed 3 alone changes it "
                                     "to “synergistic”, so it rests on few seeds.")
    steady = factorial.analyze(factorial_data(0.850, 0.860, 0.855, 0.865, rng_seed=2))
    assert not any(c.startswith("One seed") for c in steady.conclusions)


@pytest.mark.slow  # over 5 s
def test_factorial_tables_plot_and_general_factors() -> None:
    report = factorial.analyze(factorial_data(0.85, 0.86, 0.855, 0.865))
    tables = {t.name: t.frame for t in report.tables}
    assert {"cells", "effects", "anova", "interaction_tests"} <= set(tables)
    assert {"effect", "definition", "mean_diff", "ci_low", "ci_high", "t", "p_value", "cohens_dz", "p_holm"} <= set(
        tables["effects"])
    assert list(tables["anova"]["term"]) == ["dropout", "weight decay", "dropout x weight decay", "seed", "residual"]
    ax = {f.name: f.figure for f in report.figures}["interaction_plot"].axes[0]
    assert ax.get_xlabel() == "weight decay" and ax.get_ylabel() == "test accuracy"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["no dropout", "dropout 0.5/0.5"]

    other = factorial_data(0.85, 0.86, 0.855, 0.865).runs.drop(columns=["model.dropout_1", "model.dropout_2"]).rename(
        columns={"experiment": "model", "optim.weight_decay": "model.dropout_1"})
    other["model"] = other["model"].map({"no_dropout": "scratch", "chapter": "concise"})
    data = study_data({"model": ["scratch", "concise"], "model.dropout_1": [0.0, 0.0005]}, other)
    assert factorial.analyze(data).answer.startswith(
        "The effects of model and model.dropout_1 on test accuracy are additive")
    lonely = study_data({"experiment": ["chapter"]}, pd.DataFrame({"experiment": ["chapter"], "seed": [0],
                                                                   "test_acc": [0.8]}))
    assert factorial.analyze(lonely).conclusions == []


def _anova_input(rng_seed: int = 3) -> tuple[pd.DataFrame, factorial.Factor, factorial.Factor, pd.DataFrame]:
    data = factorial_data(0.85, 0.87, 0.865, 0.872, noise=0.003, rng_seed=rng_seed)
    a, b = factorial.find_factors(data)
    return data.runs, a, b, factorial.cell_table(data.runs, a, b)


def test_anova_interaction_matches_the_per_seed_test_and_scipy() -> None:
    runs, a, b, cells = _anova_input()
    interaction = cells["both"] - cells["b_only"] - cells["a_only"] + cells["neither"]
    paired = stats.ttest_rel(cells["both"] - cells["b_only"], cells["a_only"] - cells["neither"])
    table, coef = factorial.anova_2x2(runs, a, b)
    rows = table.set_index("term")
    # the OLS interaction coefficient is the mean per-seed interaction, and its t-test is the pooled F
    assert coef["estimate"] == pytest.approx(interaction.mean())
    assert coef["t"] ** 2 == pytest.approx(rows.loc["dropout x weight decay", "F"])
    assert coef["p_value"] == pytest.approx(rows.loc["dropout x weight decay", "p_value"])
    # against its own interaction x seed error, the ANOVA F is the paired t-test squared, same p
    assert rows.loc["dropout x weight decay", "F_rm"] == pytest.approx(paired.statistic ** 2)
    assert rows.loc["dropout x weight decay", "p_rm"] == pytest.approx(paired.pvalue)
    assert rows.loc["dropout x weight decay", "df_rm_error"] == len(SEEDS) - 1
    # sums of squares add up to the total
    total = ((runs["test_acc"] - runs["test_acc"].mean()) ** 2).sum()
    assert rows["SS"].sum() == pytest.approx(total)

    # without a block it is the textbook two-way ANOVA: the treatments' SS is one-way ANOVA's between-cells SS
    plain, _ = factorial.anova_2x2(runs, a, b, block=None)
    groups = [g["test_acc"].to_numpy() for _, g in runs.groupby([a.key, b.key])]
    one_way = stats.f_oneway(*groups)
    rows = plain.set_index("term")
    between = rows.loc[["dropout", "weight decay", "dropout x weight decay"], "SS"].sum()
    assert (between / 3) / rows.loc["residual", "MS"] == pytest.approx(one_way.statistic)
    assert rows.loc["residual", "df"] == len(runs) - 4
    cell = runs.groupby([a.key, b.key])["test_acc"].mean()
    contrast = cell[(a.on, b.on)] - cell[(a.off, b.on)] - cell[(a.on, b.off)] + cell[(a.off, b.off)]
    assert rows.loc["dropout x weight decay", "SS"] == pytest.approx(len(SEEDS) * contrast ** 2 / 4)


def test_pooled_anova_equals_the_per_seed_test_when_error_components_are_equal() -> None:
    """Known input: the seed x A, seed x B and seed x AB deviations have the same spread, so pooled F = paired t^2."""
    w = np.array([0.004, -0.002, 0.001, -0.003, 0.0])
    u, v = np.roll(w, 1), np.roll(w, 2)  # same sum of squares about the mean
    rows = []
    for s in SEEDS:
        for (exp, ca), (wd, cb) in product([("no_dropout", -1), ("chapter", 1)], [(0.0, -1), (0.0005, 1)]):
            acc = 0.85 + 0.001 * s + 0.005 * ca + 0.0025 * cb + 0.001 * ca * cb + u[s] * ca + v[s] * cb + w[s] * ca * cb
            rows.append({"experiment": exp, "optim.weight_decay": wd, "model.dropout_1": RATES_OF[exp], "seed": s,
                         "test_acc": acc})
    data = study_data(FACTORIAL_GRID, pd.DataFrame(rows))
    a, b = factorial.find_factors(data)
    cells = factorial.cell_table(data.runs, a, b)
    paired = stats.ttest_rel(cells["both"] - cells["b_only"], cells["a_only"] - cells["neither"])
    row = factorial.anova_2x2(data.runs, a, b)[0].set_index("term").loc["dropout x weight decay"]
    assert row["F"] == pytest.approx(paired.statistic ** 2) and row["F_rm"] == pytest.approx(row["F"])


# ---------------------------------------------------------------- end to end on a tiny real study

E2E_NAME = "tiny_reports"


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """One 2x2 grid over the two dropout rates (smoke subset, 2 epochs, 2 seeds), shared by the three reports."""
    root = tmp_path_factory.mktemp("grid_reports")
    spec = {"name": E2E_NAME, "question": "Does the grid report run? More text.", "experiment": "smoke",
            "epochs": 2, "grid": {"model.dropout_1": [0.0, 0.5], "model.dropout_2": [0.0, 0.5]}, "seeds": [0, 1]}
    for analysis in ("rates_grid", "epochs", "factorial"):
        (root / f"{analysis}.yaml").write_text(yaml.safe_dump({**spec, "analysis": analysis}))
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(root / "results")}
    out = subprocess.run([sys.executable, "-m", "dropout_lab.cli", "study", "run", str(root / "rates_grid.yaml")],
                         env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return root


def conclusion_bullets(readme: str) -> list[str]:
    """The bullet lines of a report's Conclusion section (up to the next section)."""
    section = readme.split("\n## Conclusion\n", 1)[1].split("\n## ", 1)[0]
    return [line[2:] for line in section.splitlines() if line.startswith("- ")]


# Conclusions of the 2x2 rate grid at 2 epochs: rates_grid (verdict, best cell); epochs (the answer, where dropout
# pays, final test accuracy at the fixed budget and with early stopping, best epoch, gap; no smoothing under 10
# epochs);
# factorial (verdict, two main effects, ANOVA).
@pytest.mark.parametrize(("analysis", "csvs", "pngs", "conclusions"), [
    ("rates_grid", ["cells", "swap_asymmetry"], ["test_accuracy_heatmap", "swap_asymmetry"],
     ["\u201cLower rate near the input\u201d ", "Best cell: "]),
    ("epochs", ["test_accuracy", "best_epochs", "per_epoch_val_acc"], ["curves", "generalization_gap"],
     ["No epoch of 2 from which model.dropout_1=0.5, model.dropout_2=0.5 pays against model.dropout_1=0.0, "
      "model.dropout_2=0.0 is supported. At the fixed budget of 2 epochs its test accuracy is ",
      "model.dropout_1=0.5, model.dropout_2=0.5 vs model.dropout_1=0.0, model.dropout_2=0.0 over 2 epochs: ",
      "Fixed budget (every run's last epoch, 2): ", "Early stopping (each run at its best-validation epoch): ",
      "Best epoch by validation accuracy", "Generalization gap "]),
    ("factorial", ["cells", "effects", "anova", "interaction_tests"], ["interaction_plot"],
     ["The effects of model.dropout_1 and model.dropout_2 on test accuracy are ",
      "Main effect of model.dropout_1 on test accuracy: ", "Main effect of model.dropout_2 on test accuracy: ",
      "Two-way ANOVA with seed as block"]),
])
@pytest.mark.slow
def test_report_end_to_end(tiny_study: Path, analysis: str, csvs: list[str], pngs: list[str],
                           conclusions: list[str]) -> None:
    assert analysis in ANALYSES
    spec = load_spec(str(tiny_study / f"{analysis}.yaml"))
    study = optuna.load_study(study_name=E2E_NAME, storage=f"sqlite:///{tiny_study}/results/studies.db")
    reports = tiny_study / "reports" / analysis
    readme = build_report(spec, study, reports_dir=reports)
    folder = reports / E2E_NAME
    assert readme == folder / "README.md" and readme.exists()
    assert all((folder / f"{name}.csv").exists() for name in [*csvs, "runs"])
    assert all((folder / f"{name}.png").stat().st_size > 0 for name in pngs)
    text = readme.read_text()
    bullets = conclusion_bullets(text)
    assert len(bullets) == len(conclusions), bullets
    assert all(bullet.startswith(start) for bullet, start in zip(bullets, conclusions)), bullets
    assert not any(re.search(r"\bnan\b", bullet, re.IGNORECASE) for bullet in bullets), bullets
    assert E2E_NAME in (reports / "README.md").read_text()
