"""Reports of the instrument studies: activation variance (ex. 3), test-time evaluation (ex. 4), DropConnect (ex. 6).

Synthetic StudyData checks what each analysis computes and that its sentences follow the numbers;
one tiny real study per kind of run goes end to end through ``build_report``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from dropout_lab.analysis.stats import ratio_of_means
from dropout_lab.config.analysis_plan import AnalysisPlan, Comparison
from dropout_lab.config.study_spec import StudySpec, load_spec
from dropout_lab.reports.analyses import dropconnect as dc
from dropout_lab.reports.analyses import test_time as tt
from dropout_lab.reports.analyses import variance as va
from dropout_lab.reports.build import build_report
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.plan_section import declared_verdicts

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True)
def _close_figures():
    """Analyses called directly hand back open figures (the writer closes them): close them after each test."""
    yield
    plt.close("all")

SEEDS = [0, 1, 2, 3]


def _data(grid: dict, runs: pd.DataFrame, instruments: dict[str, dict[int, list[dict]]],
          curves: pd.DataFrame | None = None) -> StudyData:
    """A StudyData shaped like ``load_study_data``'s: ``instruments[name][trial]`` are a run's tidy rows."""
    spec = StudySpec(name="synthetic", question="q?", epochs=3, grid=grid, seeds=SEEDS)
    runs = runs.assign(state="COMPLETE", wall_time_s=1.0)
    tables = {name: pd.concat([pd.DataFrame(rows).assign(trial=trial) for trial, rows in by_trial.items()],
                              ignore_index=True) for name, by_trial in instruments.items()}
    return StudyData(spec=spec, runs=runs, all_runs=runs, curves=pd.DataFrame() if curves is None else curves,
                     instruments=tables)


# --------------------------------------------------------------------------- variance (exercise 3)

def _activation_rows(p: float, scale: float, growth: float, seed: int, rng: np.random.Generator) -> list[dict]:
    """Monitor rows whose after-noise variance follows inverted dropout at rate p (exact up to 0.5% noise)."""
    rows = []
    for epoch in (1, 2, 3):
        for layer, (m0, v0) in ((1, (0.2, 0.05)), (2, (0.1, 0.02))):
            mean = m0 * (1 + 0.02 * seed)
            var = v0 * scale * (growth * (1 + 0.02 * seed)) ** (epoch - 1) * (1 + 0.03 * seed)
            z = 0.45
            for source, step in (("train", 10 * (epoch - 1)), ("probe_train", 10 * epoch), ("probe_eval", 10 * epoch)):
                noisy = source != "probe_eval" and p > 0
                after_var = va.predicted_after_variance(mean, var, p) * (1 + rng.normal(0, 0.005)) if noisy else var
                after_z = z + p * (1 - z) if noisy else z
                base = {"source": source, "epoch": epoch, "step": step, "layer": layer}
                rows.append({**base, "stage": "before", "mean": mean, "var": var, "zero_frac": z})
                rows.append({**base, "stage": "after", "mean": mean, "var": after_var, "zero_frac": after_z})
    return rows


def variance_data(dropout_scale: float = 0.7, growth: float = 1.5, config: bool = True) -> StudyData:
    """With ``config``, the runs carry their stored rates (``model.dropout_1/2``), as the run table has them."""
    rng = np.random.default_rng(0)
    runs, activations = [], {}
    for experiment, p, scale in (("chapter", 0.5, dropout_scale), ("no_dropout", 0.0, 1.0)):
        for seed in SEEDS:
            trial = len(runs)
            rates = {"model.dropout_1": p, "model.dropout_2": p} if config else {}
            runs.append({"trial": trial, "experiment": experiment, **rates, "seed": seed, "test_acc": 0.85})
            jitter = 1 + 0.05 * (seed % 2) * (p > 0)  # seed-to-seed variation of the dropout/no-dropout ratio
            activations[trial] = _activation_rows(p, scale * jitter, growth, seed, rng)
    return _data({"experiment": ["chapter", "no_dropout"]}, pd.DataFrame(runs), {"activations": activations})


def test_predicted_variance_formula_on_known_input_and_simulation() -> None:
    assert va.predicted_after_variance(1.0, 2.0, 0.5) == pytest.approx(5.0)  # (2 + 0.5 * 1) / 0.5
    assert va.predicted_after_variance(3.0, 1.0, 0.0) == pytest.approx(1.0)  # no noise: unchanged
    rng = np.random.default_rng(1)
    h = np.maximum(rng.normal(0.3, 1.0, 2_000_000), 0)  # ReLU outputs
    p = 0.3
    after = h * (rng.random(h.size) >= p) / (1 - p)
    assert after.var() == pytest.approx(va.predicted_after_variance(h.mean(), h.var(), p), rel=0.01)


def test_variance_tables_figures_and_conclusions() -> None:
    report = va.analyze(variance_data())
    tables = {t.name: t.frame for t in report.tables}
    assert set(tables) == {"final_epoch_variance", "noise_inflation", "pre_noise_vs_no_noise", "variance_evolution"}
    final = tables["final_epoch_variance"]
    assert {"configuration", "layer", "stage", "mode", "var_mean", "var_ci_low", "var_ci_high", "n"} <= set(final)
    assert len(final) == 2 * 2 * 2 * 2 and (final["n"] == len(SEEDS)).all()
    inflation = tables["noise_inflation"].set_index(["configuration", "layer"])
    assert inflation.loc[("chapter", 1), "p"] == 0.5 and inflation.loc[("no_dropout", 1), "p"] == 0.0
    assert inflation.loc[("chapter", 1), "measured_over_predicted_mean"] == pytest.approx(1.0, abs=0.01)
    assert inflation.loc[("no_dropout", 2), "ratio_after_before_mean"] == pytest.approx(1.0)
    assert {f.name for f in report.figures} == {"variance_per_epoch", "variance_per_step", "predicted_vs_measured"}
    for figure in report.figures:
        labels = {ax.get_xlabel() for ax in figure.figure.axes} | {ax.get_ylabel() for ax in figure.figure.axes}
        assert any("variance" in label for label in labels) and len(labels - {""}) >= 2

    # The numbers in the sentences are the table's.
    ratio = inflation.loc[("chapter", 1), "ratio_after_before_mean"]
    assert report.answer.startswith("With chapter, the noise multiplies")
    assert f"layer 1 x{ratio:.2f}" in report.answer
    close = inflation.loc[("chapter", 1), "measured_over_predicted_mean"]
    assert f"measured/predicted = {close:.4f}" in report.conclusions[1] and "(p = 0.5)" in report.conclusions[1]
    assert any(c.startswith("no_dropout: no activation noise") for c in report.conclusions)
    smaller = [c for c in report.conclusions if "before the noise), layer" in c]
    assert len(smaller) == 2 and all("is smaller than that with no_dropout" in c for c in smaller)
    assert all("grows" in c for c in report.conclusions if "from epoch 1 to 3" in c)
    assert "Selection: no model is selected; every finished run contributes its activations at every recorded epoch " \
           "(1 to 3)" in " ".join(report.notes)


def test_variance_conclusions_follow_the_numbers() -> None:
    report = va.analyze(variance_data(dropout_scale=1.6, growth=0.6))
    gap = [c for c in report.conclusions if "before the noise), layer" in c]
    assert gap and all("is larger than that with no_dropout" in c for c in gap)
    assert all("shrinks" in c for c in report.conclusions if "from epoch 1 to 3" in c)
    assert "layer 1 larger" in report.answer


def test_variance_rates_estimated_from_zero_fractions_without_stored_rates() -> None:
    report = va.analyze(variance_data(config=False))
    inflation = {t.name: t.frame for t in report.tables}["noise_inflation"].set_index(["configuration", "layer"])
    assert inflation.loc[("chapter", 2), "p"] == pytest.approx(0.5)
    assert any("estimated from zero fractions" in n for n in report.notes)


# --------------------------------------------------------------------------- test time (exercise 4)

T_VALUES = [1, 2, 5, 10]


def _test_time_rows(seed: int, single_gap: float, mc_ece: float) -> list[dict]:
    det = 0.88 + 0.004 * seed
    rows = [{"mode": "deterministic", "T": 1, "accuracy": det, "nll": 0.35, "ece": 0.020 + 0.001 * seed,
             "entropy": 0.3, "seconds": 0.10 + 0.002 * seed}]
    single = det + single_gap + 0.001 * (seed % 2)
    rows.append({"mode": "single", "T": max(T_VALUES), "accuracy": single, "nll": 0.42 + 0.002 * seed,
                 "ece": 0.04 + 0.0015 * seed, "entropy": 0.35, "seconds": 0.10 + 0.003 * seed})
    for T in T_VALUES:
        rows.append({"mode": "mc", "T": T, "accuracy": det + single_gap / T + 0.0005 * (seed % 2),
                     "nll": 0.34 - 0.002 * seed / T, "ece": mc_ece + 0.0013 * seed, "entropy": 0.32,
                     "seconds": T * (0.10 + 0.002 * seed) * (1.05 + 0.01 * seed)})
    return rows


def tt_data(single_gap: float = -0.03, mc_ece: float = 0.01) -> StudyData:
    runs = pd.DataFrame({"trial": range(len(SEEDS)), "model": "concise", "seed": SEEDS, "test_acc": 0.88})
    rows = {i: _test_time_rows(seed, single_gap, mc_ece) for i, seed in enumerate(SEEDS)}
    return _data({"model": ["concise"]}, runs, {"test_time": rows})


@pytest.mark.slow  # over 5 s
def test_test_time_tables_figures_and_conclusions() -> None:
    report = tt.analyze(tt_data())
    tables = {t.name: t.frame for t in report.tables}
    summary = tables["test_time_summary"]
    expected = {"mode", "T", "accuracy_mean", "accuracy_ci_low", "nll_mean", "ece_ci_high", "seconds_mean", "n"}
    assert expected <= set(summary)
    assert summary["mode"].tolist()[:2] == ["deterministic", "single"] and len(summary) == 2 + len(T_VALUES)
    comp = tables["vs_deterministic"]
    assert set(comp["metric"]) == {"accuracy", "nll", "ece"} and {"p_holm", "cohens_dz", "ci_low"} <= set(comp)
    single = comp[(comp["mode"] == "single") & (comp["metric"] == "accuracy")].iloc[0]
    assert single["mean_diff"] == pytest.approx(-0.03 + 0.0005, abs=1e-9)
    assert {f.name for f in report.figures} == {"metrics_vs_T", "cost_vs_T"}

    # MC minus deterministic per run is -0.03/T + 0.0005 (odd seeds): the verdict comes from these paired
    # differences (Holm over T, TOST within ±0.5 pp), not from overlapping between-seed intervals.
    verdicts = tt.mc_verdicts(comp, "concise", 0.005).set_index("T")
    assert verdicts.loc[10, "mean_diff"] == pytest.approx(-0.003 + 0.00025, abs=1e-9)
    assert verdicts["verdict"].tolist() == ["significantly worse"] * 3 + ["significantly worse yet equivalent within "
                                                                          "±0.5 pp"]
    assert tt.equivalent_from(verdicts.reset_index()) == 10
    assert report.answer.startswith("Against the deterministic pass (test accuracy 0.8860), "
                                    "a single noisy pass loses 2.95 pp")
    assert "MC averaging is equivalent to it within ±0.5 pp from T = 10 (TOST, paired on seeds), though still " \
           "significantly different at T = 10" in report.answer and "T = 10 passes cost" in report.answer
    assert any(c.startswith("MC averaging minus the deterministic pass in test accuracy, paired on seeds (Holm over "
                            "the T family, TOST within ±0.5 pp): significantly worse at T = 1, 2, 5; ") for c in
               report.conclusions)
    far = tt.analyze(tt_data(single_gap=-0.06)).answer  # at T = 10 still -0.58 pp: beyond the margin
    assert "MC averaging is still significantly worse at T = 10 (paired t-test, Holm over T)" in far
    (mc,) = [c for c in report.conclusions if c.startswith("MC averaging at T = 10 vs deterministic")]
    assert mc.endswith("not part of the declared plan (exploratory, no verdict).")  # no plan: no calibration verdict
    assert not any("calibrated" in c for c in report.conclusions)
    cost = tables["cost"].set_index(["mode", "T"])
    assert cost.loc[("mc", 10), "per_pass_ratio"] == pytest.approx(1.065, abs=0.01)
    assert f"{cost.loc[('mc', 10), 'time_ratio']:.1f}x the deterministic" in report.conclusions[-1]


@pytest.mark.slow  # over 5 s
def test_test_time_conclusions_follow_the_numbers() -> None:
    report = tt.analyze(tt_data(single_gap=+0.03, mc_ece=0.05))
    assert "a single noisy pass gains 3.05 pp" in report.answer
    assert any(c.startswith("A single stochastic pass raises test accuracy") for c in report.conclusions)
    (mc,) = [c for c in report.conclusions if c.startswith("MC averaging at T = 10 vs deterministic")]
    assert "ECE 0.0520 vs 0.0215, a difference of +0.0305 with 95% CI [" in mc  # described, not judged
    assert not any("calibrated" in c for c in report.conclusions)


@pytest.mark.slow  # over 5 s
def test_test_time_cost_is_the_ratio_of_mean_times_with_a_paired_bootstrap_interval() -> None:
    data = tt_data()
    rows = tt.test_time_table(data)
    cost = tt.cost_table(rows).set_index(["mode", "T"])
    det = rows[rows["mode"] == "deterministic"].sort_values("seed")["seconds"].to_numpy()
    mc = rows[(rows["mode"] == "mc") & (rows["T"] == 10)].sort_values("seed")["seconds"].to_numpy()
    row = cost.loc[("mc", 10)]
    assert row["time_ratio"] == pytest.approx(mc.mean() / det.mean()) and row["n"] == len(SEEDS)
    assert row["time_ratio"] != pytest.approx(np.mean(mc / det), abs=1e-4)  # not the mean of per-seed ratios
    expected = ratio_of_means(mc, det)
    assert (row["time_ratio_ci_low"], row["time_ratio_ci_high"]) == pytest.approx((expected["ci_low"],
                                                                                    expected["ci_high"]))
    assert row["time_ratio_ci_low"] < row["time_ratio"] < row["time_ratio_ci_high"]
    assert row["per_pass_ratio"] == pytest.approx(row["time_ratio"] / 10)
    assert not any(c.endswith("_mean") and "ratio" in c for c in cost.columns)  # no per-seed ratio columns
    answer = tt.analyze(data).answer
    assert answer.endswith(f"T = 10 passes cost {row['time_ratio']:.1f}x the time (the ratio of the mean times, "
                           f"95% CI [{row['time_ratio_ci_low']:.3g}, {row['time_ratio_ci_high']:.3g}]).")
    assert "NLL and calibration get no verdict of a declared plan here" in answer


def _declared(name: str, metric: str, treatment: dict, margin: float) -> Comparison:
    return Comparison(name=name, metric=f"test_time.{metric}", treatment=treatment, control={"mode": "deterministic"},
                      margin=margin, why="w", family=name)


@pytest.mark.slow  # over 5 s
def test_test_time_speaks_of_calibration_only_through_the_declared_plan() -> None:
    """Declared rows give the plan's verdicts (better or worse calibrated only when decided); MC's ECE, undeclared
    as in ex4_test_time.yaml, is described with its interval and labelled exploratory."""
    data = tt_data(mc_ece=0.02)  # MC's ECE: +0.03 pp per seed over the deterministic's, tiny against its spread
    plan = AnalysisPlan(primary="test_acc_last_epoch", sensitivity=[], comparisons=[
        _declared("single NLL", "nll", {"mode": "single"}, 0.005),
        _declared("single ECE", "ece", {"mode": "single"}, 0.002),
        _declared("MC T=10 NLL", "nll", {"mode": "mc", "T": 10}, 0.005),
        _declared("MC T=5 ECE", "ece", {"mode": "mc", "T": 5}, 0.0001)])
    data = replace(data, spec=replace(data.spec, plan=plan))
    verdicts = declared_verdicts(data).set_index("comparison")["verdict"].to_dict()
    assert verdicts == {"single NLL": "higher", "single ECE": "higher", "MC T=10 NLL": "lower",
                        "MC T=5 ECE": "undecided"}
    rows = tt.test_time_table(data)
    assert set(tt.declared_rows(data, rows)) == {("nll", "single", None), ("ece", "single", None),
                                                  ("nll", "mc", 10), ("ece", "mc", 5)}
    report = tt.analyze(data)
    (single,) = [c for c in report.conclusions if c.startswith("A single stochastic pass vs deterministic")]
    assert "by the declared plan (single NLL) **higher (worse)**: +0.0730, 95% CS [" in single
    assert "by the declared plan (single ECE) **higher (worse calibrated)**: +0.0208, 95% CS [" in single
    (mc,) = [c for c in report.conclusions if c.startswith("MC averaging at T = 10 vs deterministic")]
    assert "NLL 0.3397 vs 0.3500, by the declared plan (MC T=10 NLL) **lower (better)**: -0.0103, 95% CS [" in mc
    assert "ECE 0.0220 vs 0.0215, a difference of +0.0005 with 95% CI [" in mc  # T = 10's ECE: not declared
    assert mc.endswith("not part of the declared plan (exploratory, no verdict).") and "calibrated" not in mc
    assert ("by the declared plan: “single NLL” higher (worse), “single ECE” higher (worse calibrated), “MC T=10 NLL” "
            "lower (better), “MC T=5 ECE” undecided; and T = 10 passes cost") in report.answer
    # A declared row pools its configurations: with two, none is read as this configuration's verdict.
    two = pd.concat([rows, rows.assign(configuration="other")], ignore_index=True)
    assert tt.declared_rows(data, two) == {}


def test_test_time_holm_families_are_the_T_values_and_the_single_pass_alone() -> None:
    comp = tt.comparison_table(tt.test_time_table(tt_data()), 0.005)
    for metric in ("accuracy", "nll", "ece"):
        rows = comp[comp["metric"] == metric]
        single, mc = rows[rows["mode"] == "single"].iloc[0], rows[rows["mode"] == "mc"]
        assert single["p_holm"] == single["p_value"]  # a family of one
        assert len(mc) == len(T_VALUES) and (mc["p_holm"] >= mc["p_value"]).all()
        smallest = mc["p_value"].min()
        assert mc.loc[mc["p_value"].idxmin(), "p_holm"] == pytest.approx(min(1.0, len(T_VALUES) * smallest))


@pytest.mark.slow  # over 5 s
def test_test_time_names_a_seed_that_alone_changes_a_verdict() -> None:
    data = tt_data(single_gap=0.0)
    assert tt.seed_robustness(tt.test_time_table(data), "concise", 0.005) is None
    # Seed 3's single pass alone is 4 pp worse: with it the single pass is not shown equivalent; without, it is.
    rows = data.instruments["test_time"].copy()
    outlier = (rows["trial"] == 3) & (rows["mode"] == "single")
    rows.loc[outlier, "accuracy"] -= 0.04
    shaken = replace(data, instruments={"test_time": rows})
    text = tt.seed_robustness(tt.test_time_table(shaken), "concise", 0.005)
    assert text is not None and "leaving out seed 3 alone changes it to “single pass equivalent; MC equivalent" in text
    assert text in tt.analyze(shaken).conclusions


# --------------------------------------------------------------------------- DropConnect (exercise 6)

def dropconnect_data(gain: float = 0.01) -> StudyData:
    runs = []
    for noise in ("dropout", "dropconnect"):
        for rate in (0.2, 0.5):
            for seed in SEEDS:
                acc = 0.86 - 0.02 * rate + 0.003 * seed + (gain + 0.001 * (seed % 2) if noise == "dropconnect" else 0)
                runs.append({"trial": len(runs), "noise": noise, "model.dropout_1": rate, "seed": seed,
                             "test_acc": acc})
    grid = {"noise": ["dropout", "dropconnect"], "model.dropout_1": [0.2, 0.5]}
    return _data(grid, pd.DataFrame(runs), {})


def test_dropconnect_tables_figures_and_conclusions() -> None:
    report = dc.analyze(dropconnect_data())
    tables = {t.name: t.frame for t in report.tables}
    assert set(tables) == {"accuracy", "paired_differences"}
    diffs = tables["paired_differences"]
    assert diffs["model.dropout_1"].tolist() == [0.2, 0.5] and (diffs["noise"] == "dropconnect").all()
    assert diffs["mean_diff"].tolist() == pytest.approx([0.0105, 0.0105])
    assert {"p_value", "p_holm", "cohens_dz", "ci_low", "ci_high"} <= set(diffs)
    assert (diffs["p_holm"] >= diffs["p_value"]).all()
    assert {f.name for f in report.figures} == {"test_accuracy"}
    assert report.answer == ("At matched rates dropconnect beats dropout in test accuracy (1.05 pp at 0.2: higher, "
                             "1.05 pp at 0.5: higher; Holm, TOST).")
    # No cost from study wall times (population members share their population's seconds): the benchmark's.
    assert not any("time" in c or "seconds" in c for c in report.conclusions)
    assert any("benchmarks/bench_dropconnect.py" in n and "share" in n for n in report.notes)
    assert not any(c.startswith("One seed can change") for c in report.conclusions)  # every seed agrees


def test_dropconnect_conclusions_follow_the_numbers() -> None:
    report = dc.analyze(dropconnect_data(gain=-0.02))
    assert report.answer.startswith("At matched rates dropconnect is worse than dropout")
    assert all("lower than dropout's" in c for c in report.conclusions if c.startswith("At model.dropout_1 ="))


def test_dropconnect_names_a_seed_whose_omission_flips_a_verdict() -> None:
    data = dropconnect_data()  # dropconnect 1.0-1.1 pp higher at both rates, for every seed
    outlier = (data.runs["noise"] == "dropconnect") & (data.runs["model.dropout_1"] == 0.2) & (data.runs["seed"] == 3)
    data.runs.loc[outlier, "test_acc"] -= 0.031  # seed 3 alone: -2 pp at 0.2
    report = dc.analyze(data)
    assert ("One seed can change the verdict “dropconnect at 0.2: inconclusive; dropconnect at 0.5: higher”: "
            "leaving out seed 3 alone changes it to “dropconnect at 0.2: higher; dropconnect at 0.5: higher”, "
            "so it rests on few seeds.") in report.conclusions


@pytest.mark.slow  # over 5 s
def test_dropconnect_says_equivalent_or_inconclusive_by_tost_not_by_a_missing_p_value() -> None:
    equal = dc.analyze(dropconnect_data(gain=0.0))  # differences 0 or 0.1 pp: not significant, within ±0.5 pp
    assert equal.answer.startswith("At matched rates dropconnect is equivalent (within ±0.5 pp) to dropout")
    assert all("is equivalent to dropout's" in c and "equivalent within ±0.5 pp (TOST p = " in c
               for c in equal.conclusions if c.startswith("At model.dropout_1 ="))
    noisy = dropconnect_data(gain=0.0)
    jitter = noisy.runs["seed"].map({0: 0.02, 1: -0.02, 2: 0.015, 3: -0.015})
    noisy.runs["test_acc"] += jitter.where(noisy.runs["noise"] == "dropconnect", 0.0)
    unsure = dc.analyze(noisy)
    assert unsure.answer.startswith("At matched rates dropconnect is inconclusive at this budget")
    assert all("not shown to differ from, nor to equal, dropout's" in c and "inconclusive at this budget: 90% CI" in c
               for c in unsure.conclusions if c.startswith("At model.dropout_1 ="))
    diffs = {t.name: t.frame for t in unsure.tables}["paired_differences"]
    assert {"tost_p", "equivalent", "ci90_low", "ci90_high"} <= set(diffs)


# --------------------------------------------------------------------------- end to end on tiny real studies

INSTRUMENTS = {"name": "instruments", "question": "Tiny: activation variance and test-time evaluation?",
               "experiment": "smoke", "epochs": 2, "seeds": [0, 1],
               "overrides": ["monitor.enabled=true", "monitor.every_n_steps=4", "test_time.enabled=true",
                             "test_time.T=[1,2,5]", "model.dropout_2=\\${model.dropout_1}"],
               "grid": {"model.dropout_1": [0.5, 0.0]}}
DROPCONNECT = {"name": "tiny_dropconnect", "question": "Tiny: DropConnect against dropout?", "experiment": "smoke",
               "epochs": 1, "seeds": [0, 1], "overrides": ["model.dropout_2=\\${model.dropout_1}"],
               "grid": {"noise": ["dropout", "dropconnect"], "model.dropout_1": [0.2, 0.5]}}


@pytest.fixture(scope="module")
def real_studies(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the two tiny studies side by side (one worker each); returns the folder of specs and results."""
    root = tmp_path_factory.mktemp("instrument_studies")
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(root / "results")}
    specs = {"variance": INSTRUMENTS, "test_time": INSTRUMENTS, "dropconnect": DROPCONNECT}
    for analysis, fields in specs.items():
        (root / f"{analysis}.yaml").write_text(yaml.safe_dump({**fields, "analysis": analysis}))
    # Both specs of one study share the sqlite file; one launcher per study.
    jobs = [subprocess.Popen([sys.executable, "-m", "dropout_lab.cli", "study", "run", str(root / f"{name}.yaml")],
                             env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("variance", "dropconnect")]
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-3000:]
    return root


@pytest.mark.parametrize("analysis, csvs, pngs", [
    # Each also ships its per-seed tidy data (curves, instrument rows), so it can be re-derived from the folder.
    ("variance", ["final_epoch_variance", "noise_inflation", "pre_noise_vs_no_noise", "variance_evolution",
                  "curves", "activations"],
     ["variance_per_epoch", "variance_per_step", "predicted_vs_measured"]),
    ("test_time", ["test_time_summary", "vs_deterministic", "cost", "curves", "test_time"],
     ["metrics_vs_T", "cost_vs_T"]),
    ("dropconnect", ["accuracy", "paired_differences", "curves"], ["test_accuracy"]),
])
@pytest.mark.slow
def test_report_end_to_end(real_studies: Path, tmp_path: Path, analysis: str, csvs: list[str],
                           pngs: list[str]) -> None:
    spec = load_spec(str(real_studies / f"{analysis}.yaml"))
    assert spec.analysis == analysis
    study = optuna.load_study(study_name=spec.name, storage=f"sqlite:///{real_studies}/results/studies.db")
    readme = build_report(spec, study, reports_dir=tmp_path)
    folder = tmp_path / spec.name
    assert readme == folder / "README.md" and readme.is_file()
    for name in ["runs", *csvs]:
        assert not pd.read_csv(folder / f"{name}.csv").empty, name
    for name in pngs:
        assert (folder / f"{name}.png").stat().st_size > 10_000, name
    text = readme.read_text()
    section = text.split("\n## Conclusion\n", 1)[1].split("\n## ", 1)[0]
    bullets = [line for line in section.splitlines() if line.startswith("- ")]
    assert bullets and all(line.startswith("- ") or not line.strip() for line in section.splitlines())
    assert not any(re.search(r"\bnan\b", bullet, re.IGNORECASE) for bullet in bullets), bullets
    index = (tmp_path / "README.md").read_text()
    assert f"[Full report]({spec.name}/README.md)" in index and "no finished runs yet" not in index
