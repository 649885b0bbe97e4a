"""The report pipeline: files written from a real tiny study, conclusions computed from the numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from dropout_lab.config.study_spec import StudySpec, load_spec
from dropout_lab.errors import StudySpecError
from dropout_lab.reports.analyses import baseline, noise_final
from dropout_lab.reports.build import build_report
from dropout_lab.reports.inputs import StudyData

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True)
def _close_figures():
    """Analyses called directly hand back open figures (the writer closes them): close them after each test."""
    yield
    plt.close("all")


def _spec(**fields) -> StudySpec:
    return StudySpec(**{"name": "s", "question": "q?", "epochs": 1, **fields})


def _runs(key: str, accuracies: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{key: name, "seed": seed, "test_acc": acc, "val_acc": acc, "state": "COMPLETE", "wall_time_s": 1.0}
            for name, values in accuracies.items() for seed, acc in enumerate(values)]
    return pd.DataFrame(rows)


def _data(spec: StudySpec, runs: pd.DataFrame) -> StudyData:
    return StudyData(spec=spec, runs=runs, all_runs=runs, curves=pd.DataFrame())


@pytest.mark.slow  # over 5 s
def test_baseline_verdict_follows_the_numbers() -> None:
    spec = _spec(grid={"model": ["scratch", "concise"]}, seeds=list(range(5)))
    scratch = [0.84, 0.85, 0.83, 0.86, 0.84]
    noisy = _data(spec, _runs("model", {"scratch": scratch, "concise": [0.85, 0.84, 0.84, 0.85, 0.85]}))
    equal = _data(spec, _runs("model", {"scratch": scratch,
                                        "concise": [a + d for a, d in zip(scratch, [0.001, -0.001, 0.0, 0.0005, 0])]}))
    differ = _data(spec, _runs("model", {"scratch": scratch, "concise": [0.88, 0.895, 0.87, 0.905, 0.885]}))
    # Not significant is not "no difference": without TOST equivalence the answer is inconclusive, with its CI.
    first_noisy = baseline.analyze(noisy).answer
    assert first_noisy.startswith("Whether the two implementations differ is inconclusive at this budget")
    assert "inconclusive at this budget: 90% CI [" in first_noisy and "beyond ±0.5 pp" in first_noisy
    first_equal = baseline.analyze(equal).answer
    assert first_equal.startswith("The two implementations are equivalent")
    assert "equivalent within ±0.5 pp" in first_equal
    first_differ = baseline.analyze(differ).answer
    assert first_differ.startswith("The two implementations differ")
    assert "4.30 pp" in first_differ  # mean of the paired differences, computed
    # A stricter margin turns the same numbers inconclusive: the margin is the study's, not a constant.
    strict = _data(_spec(grid={"model": ["scratch", "concise"]}, seeds=list(range(5)), margin=0.0005), equal.runs)
    assert baseline.analyze(strict).answer.startswith("Whether the two implementations differ is inconclusive")


def test_baseline_gives_each_implementation_a_prediction_interval_not_a_book_number() -> None:
    from dropout_lab.analysis.stats import prediction_interval

    spec = _spec(grid={"model": ["scratch", "concise"]}, seeds=list(range(5)))
    scratch = [0.84, 0.85, 0.83, 0.86, 0.84]
    report = baseline.analyze(_data(spec, _runs("model", {"scratch": scratch, "concise": [0.85, 0.84, 0.84, 0.85,
                                                                                         0.85]})))
    summary = {t.name: t.frame for t in report.tables}["summary"].set_index("model")
    low, high = prediction_interval(scratch)
    assert (summary.loc["scratch", "pi_low"], summary.loc["scratch", "pi_high"]) == pytest.approx((low, high))
    (line,) = [c for c in report.conclusions if c.startswith("scratch: ")]
    assert f"[{low:.4f}, {high:.4f}] (95% prediction interval" in line and "not with the CI of the mean" in line
    assert not any("the book's code gave" in c for c in report.conclusions)
    assert any("60k" in n and "baseline_book" in n for n in report.notes)
    assert any(n.startswith("Selection: ") for n in report.notes)


@pytest.mark.slow  # over 5 s
def test_baseline_names_a_seed_that_alone_changes_the_verdict() -> None:
    spec = _spec(grid={"model": ["scratch", "concise"]}, seeds=list(range(5)))
    scratch = [0.84, 0.85, 0.83, 0.86, 0.84]
    concise = [a + d for a, d in zip(scratch, [0.010, 0.011, 0.009, 0.012, -0.05])]  # seed 4 hides a clear gain
    report = baseline.analyze(_data(spec, _runs("model", {"scratch": scratch, "concise": concise})))
    assert report.answer.startswith("Whether the two implementations differ is inconclusive")
    assert any(c.startswith("One seed can change the verdict “inconclusive”: leaving out seed 4 alone changes it to "
                            "“higher”") for c in report.conclusions)
    steady = baseline.analyze(_data(spec, _runs("model", {"scratch": scratch,
                                                          "concise": [a + 0.04 for a in scratch]})))
    assert not any(c.startswith("One seed") for c in steady.conclusions)


@pytest.mark.slow  # over 5 s
def test_compare_reports_the_best_epoch_mean_and_equivalence() -> None:
    from dropout_lab.reports.analyses import compare

    spec = _spec(grid={"model": ["scratch", "concise"]}, seeds=list(range(5)))
    runs = _runs("model", {"scratch": [0.84, 0.85, 0.83, 0.86, 0.84], "concise": [0.841, 0.849, 0.83, 0.8605, 0.84]})
    runs = runs.assign(best_test_acc=runs["test_acc"] + 0.01)
    report = compare.analyze(_data(spec, runs))
    summary = {t.name: t.frame for t in report.tables}["summary"].set_index("model")
    assert summary.loc["scratch", "mean_best_test_acc"] == pytest.approx(0.854)
    assert any(c.startswith("model=concise vs model=scratch: ") and "equivalent within ±0.5 pp (TOST p = " in c
               for c in report.conclusions)
    older = compare.analyze(_data(spec, runs.drop(columns=["best_test_acc"])))  # stores without best_* columns
    assert "mean_best_test_acc" not in {t.name: t.frame for t in older.tables}["summary"]


@pytest.mark.slow  # over 5 s
def test_noise_final_states_plainly_whether_anything_beats_dropout() -> None:
    spec = _spec(tuned_from=["a", "b"], seeds=list(range(5)))
    base = [0.85, 0.86, 0.84, 0.85, 0.86]
    loses = _data(spec, _runs("noise", {"dropout": base, "gaussian": [a - 0.01 for a in base]}))
    wins = _data(spec, _runs("noise", {"dropout": base,
                                       "gaussian": [a + 0.02 + 0.001 * i for i, a in enumerate(base)]}))
    assert noise_final.analyze(loses).answer.startswith("No technique beats tuned chapter dropout")
    assert noise_final.analyze(wins).answer.startswith("gaussian beats tuned chapter dropout")
    # Not significantly better is not "does not beat": without equivalence (or a significant loss) it is inconclusive.
    unsure = _data(spec, _runs("noise", {"dropout": base, "gaussian": [a + d for a, d in
                                                                         zip(base, [0.01, -0.012, 0.004, -0.003, 0])]}))
    answer = noise_final.analyze(unsure).answer
    assert answer.startswith("No technique significantly beats tuned chapter dropout, but for 1 of 1 (gaussian) the "
                             "comparison is inconclusive at this budget") and "90% CI [" in answer


@pytest.mark.slow  # over 5 s
def test_noise_final_says_whether_the_declared_goal_is_met_and_why_not_from_the_curves() -> None:
    from dropout_lab.analysis.stats import t_interval

    base = [0.85, 0.86, 0.84, 0.85, 0.86]
    runs = _runs("noise", {"dropout": base, "gaussian": [a + 0.004 for a in base]}).assign(trial=range(10))
    # Each run's validation accuracy peaks at epoch 9 of 10 (in the last fifth) and ends 0.001 lower.
    curves = pd.DataFrame([{"trial": t, "epoch": e, "val_acc": 0.80 + 0.01 * min(e, 9) - 0.001 * (e == 10),
                            "train_loss": 0.5 - 0.01 * e} for t in range(10) for e in range(1, 11)])

    def answer(goal: float, stretch: float | None = None) -> str:
        spec = _spec(tuned_from=["a", "b"], seeds=list(range(5)), epochs=10, goal=goal, stretch_goal=stretch)
        report = noise_final.analyze(StudyData(spec=spec, runs=runs, all_runs=runs, curves=curves))
        (sentence,) = [c for c in report.conclusions if "the declared goal" in c]
        return sentence

    gaussian = t_interval([a + 0.004 for a in base])
    dropout = t_interval(base)
    missed = answer(0.89)
    assert missed.startswith(f"The top technique by mean `test_acc`, gaussian, reaches 0.8560 (95% CI "
                             f"[{gaussian[0]:.4f}, {gaussian[1]:.4f}], n = 5 seeds): it misses the declared goal of "
                             "0.89 (its 95% CI lies wholly below it). The top of 2 means is biased upward (the "
                             "winner's curse")
    assert ("the unbiased check is the declared reference on chapter dropout, a cell fixed before the runs: dropout "
            f"reaches 0.8520 (95% CI [{dropout[0]:.4f}, {dropout[1]:.4f}])") in missed
    # gaussian beats dropout on every seed by 0.4 pp: it alone may be best, and its mean is below the goal.
    assert "Not every technique that may be best has a mean of at least 0.89: gaussian 0.8560." in missed
    assert ("best validation accuracy (0.8900 on average) comes at epoch 9 of 10 on average (5 of 5 in the last "
            "fifth" in missed) and "end at 0.8890 validation accuracy with a training loss of 0.4000" in missed
    met = answer(0.85, stretch=0.86)
    assert "it meets the declared goal of 0.85 and misses the stretch goal of 0.86." in met and "Why" not in met
    assert "Every technique that may be best (gaussian) has a mean of at least 0.85." in met
    assert load_spec("ex7_noise").goal == 0.89 and load_spec("ex7_noise").stretch_goal == 0.90
    with pytest.raises(StudySpecError, match=r"goal=1\.5 is invalid: allowed a test accuracy in \(0, 1\)"):
        load_spec("ex7_noise", ["goal=1.5"])
    with pytest.raises(StudySpecError, match=r"stretch_goal=0\.85 is invalid: allowed a test accuracy in \(goal, 1\)"):
        load_spec("ex7_noise", ["stretch_goal=0.85"])


@pytest.mark.slow  # over 5 s
def test_noise_final_claims_the_best_technique_only_selection_aware_on_the_primary_metric() -> None:
    """The best subset and bootstrap P(best) of the plan's primary metric (best-validation epoch), not of the last
    epoch, whose order differs; the table, the sentence, the answer note and the goal sentence agree with them."""
    from dropout_lab.analysis.best import best_subset, prob_best

    rng = np.random.default_rng(7)
    shared = rng.normal(0, 0.002, 6)
    best = {"gaussian": 0.893, "dropout": 0.892, "uniform": 0.881, "none": 0.871}
    last = {"gaussian": 0.880, "dropout": 0.884, "uniform": 0.889, "none": 0.870}  # uniform first at the last epoch
    rates = {"gaussian": 0.4, "dropout": 0.5, "uniform": 0.2, "none": 0.0}
    runs = pd.DataFrame([{"noise": "dropout" if name == "none" else name, "model.dropout_1": rates[name],
                          "model.dropout_2": rates[name], "seed": 710 + s, "state": "COMPLETE", "wall_time_s": 1.0,
                          "best_test_acc": best[name] + shared[s] + rng.normal(0, 0.001),
                          "test_acc": last[name] + shared[s] + rng.normal(0, 0.001), "val_acc": 0.88}
                         for name in best for s in range(6)]).assign(trial=range(24))
    spec = load_spec("ex7_noise", ["seeds=[710,711,712,713,714,715]"])
    report = noise_final.analyze(StudyData(spec=spec, runs=runs, all_runs=runs, curves=pd.DataFrame()))

    labelled = runs.assign(noise=[n for n in best for _ in range(6)])  # "none": dropout at rates 0
    subset = best_subset(labelled, "noise", "best_test_acc")
    p_best = prob_best(labelled, "noise", "best_test_acc")
    table = {t.name: t.frame for t in report.tables}["best_technique"]
    assert table["technique"].tolist() == subset["noise"].tolist() == ["gaussian", "dropout", "uniform", "none"]
    assert table["mean"].tolist() == pytest.approx(subset["mean"].tolist())
    assert table["p_best"].tolist() == pytest.approx(p_best[table["technique"]].tolist())
    assert table["may_be_best"].tolist() == subset["may_be_best"].tolist()
    assert {"ci_low", "ci_high", "beaten_by"} <= set(table.columns)
    may = table.loc[table["may_be_best"], "technique"].tolist()
    assert may[0] == "gaussian" and "none" not in may and "uniform" not in may

    (sentence,) = [c for c in report.conclusions if c.startswith("The techniques that may be best at 95%")]
    ranked = table.sort_values("p_best", ascending=False, kind="stable")
    assert ("(multiple comparison with the best on 6 paired seeds of `best_test_acc`: one-sided paired t-tests, "
            "Holm over all 12 ordered pairs; the set holds the truly best with probability at least 95%)") in sentence
    assert f"): {', '.join(may)}; bootstrap P(best) (10,000 paired resamples of the seeds): " in sentence
    assert sentence.endswith(", ".join(f"{t} {p:.2f}" for t, p in zip(ranked["technique"], ranked["p_best"])) + ".")
    assert any(f.name == "p_best" for f in report.figures) and report.key_figure.name == "test_accuracy"

    (goal,) = [c for c in report.conclusions if "the declared goal" in c]
    assert report.answer_note == f"{sentence} {goal}"  # the index gives the goal beside the best subset
    top = table.iloc[0]
    assert goal.startswith(f"The top technique by mean `best_test_acc`, gaussian, reaches {top['mean']:.4f} (95% CI ")
    assert "the declared goal of 0.89" in goal and "the stretch goal of 0.9" in goal
    assert "The top of 4 means is biased upward" in goal and "(the plan's reference “the goal of 0.89”)" in goal
    below = table[table["may_be_best"] & (table["mean"] < 0.89)]
    assert ("Every technique that may be best" in goal) == below.empty
    # The intervals are the seeds' on this test set; the declared goal reference adds the test set's own error.
    assert "these intervals cover seeds scored on this one test set" in goal
    assert "the reference “the goal of 0.89” reads " in goal and "pp of it the test set's)" in goal

    # Seeds added sequentially (the shipped design): the intervals are anytime-valid confidence sequences.
    sequential = noise_final.analyze(StudyData(spec=load_spec("ex7_noise"), runs=runs, all_runs=runs,
                                               curves=pd.DataFrame()))
    (goal,) = [c for c in sequential.conclusions if "the declared goal" in c]
    assert f"reaches {top['mean']:.4f} (95% CS [" in goal and "95% CI" not in goal


@pytest.mark.slow
def test_report_files_from_a_real_tiny_study(data_root: Path, tmp_path: Path) -> None:
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump({"name": "tiny", "question": "Same accuracy? (smoke)", "experiment": "smoke",
                                         "epochs": 1, "grid": {"model": ["scratch", "concise"]}, "seeds": [0, 1],
                                         "analysis": "baseline"}))
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(tmp_path / "results")}
    out = subprocess.run([sys.executable, "-m", "dropout_lab.cli", "study", "run", str(spec_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'results' / 'studies.db'}")
    readme = build_report(load_spec(str(spec_path)), study, tmp_path / "reports")
    folder = readme.parent
    for name in ("README.md", "runs.csv", "curves.csv", "summary.csv", "paired_differences.csv", "test_accuracy.png",
                 "validation_curves.png"):
        assert (folder / name).is_file(), name
    summary = pd.read_csv(folder / "summary.csv")
    text = readme.read_text()
    assert f"{summary.loc[0, 'mean']:.4f}" in text and "## Conclusion" in text
    # The README opens with the answer (the first conclusion) and the key figure, before the design; the key
    # figure is not shown again in the results.
    answer = text.split("\n## Answer\n", 1)[1].split("\n## ", 1)[0]
    results = text.split("\n## Results\n", 1)[1]
    first_conclusion = text.split("\n## Conclusion\n\n- ", 1)[1].split("\n", 1)[0]
    assert text.index("## Answer") < text.index("## Design") and answer.strip().splitlines()[0] == first_conclusion
    assert "](test_accuracy.png)" in answer and "](test_accuracy.png)" not in results
    assert "](validation_curves.png)" in results and "validation_curves" not in answer
    summary_json = json.loads((folder / "answer.json").read_text())
    minutes = pd.read_csv(folder / "runs.csv")["wall_time_s"].sum() / 60
    assert summary_json["question"] == "Same accuracy?" and summary_json["answer"] == first_conclusion
    assert summary_json["key_figure"] == "test_accuracy.png" and summary_json["tuning"] is False
    assert summary_json["compute_min"] == pytest.approx(minutes, abs=1e-3)
    # CPU-hours: each run's wall time x the torch threads `study run` gave its worker (recorded in its config).
    table = pd.read_csv(folder / "runs.csv")
    assert table["threads"].notna().all() and table["threads"].min() >= 1
    cpu_h = (table["wall_time_s"] * table["threads"]).sum() / 3600
    assert summary_json["compute"]["cpu_h"] == pytest.approx(cpu_h, abs=1e-4)
    assert summary_json["compute"]["epochs"] == table["epochs_run"].sum() == 4  # 2 configurations x 2 seeds x 1
    index = (tmp_path / "reports" / "README.md").read_text()
    assert index.startswith("# Answers to the chapter's exercises")
    entry = index.split("\n## tiny\n", 1)[1]
    assert entry.startswith("\n*Same accuracy?*\n")
    # the index prints answer.json's compute (checked against runs.csv above); formatting the CSV's sum instead
    # could round the other way at a .x5 boundary
    assert f"{first_conclusion} [Full report](tiny/README.md) · compute: {summary_json['compute']['cpu_h']:.2f} " \
        "CPU-hours." in entry
    assert f"![{summary_json['key_figure_caption']}](tiny/test_accuracy.png)" in entry
    assert f"the tuning studies included: {summary_json['compute']['cpu_h']:.2f} CPU-hours" in index
    assert "Not yet regenerated" not in index
    # A report folder written by an earlier version (no answer.json) is listed, not dropped.
    (tmp_path / "reports" / "old").mkdir()
    (tmp_path / "reports" / "old" / "README.md").write_text("# old\n")
    build_report(load_spec(str(spec_path)), study, tmp_path / "reports")
    index = (tmp_path / "reports" / "README.md").read_text()
    older = "Not yet regenerated (reports written by an earlier version, not summarised above): [old](old/README.md)."
    assert older in index and "## old" not in index and "\n## tiny\n" in index

    # Store one more run with a different number: the regenerated conclusion changes with it.
    template = next(t for t in study.get_trials() if t.params["model"] == "concise")
    study.add_trial(optuna.trial.create_trial(
        value=0.999, params={**template.params, "seed": 7},
        distributions={**template.distributions, "seed": optuna.distributions.IntDistribution(7, 7)},
        user_attrs={**template.user_attrs, "final": {**template.user_attrs["final"], "test_acc": 0.999}}))
    new_text = build_report(load_spec(str(spec_path)), study, tmp_path / "reports").read_text()
    assert new_text.split("## Conclusion")[1] != text.split("## Conclusion")[1]


def test_point_plot_error_bars_are_the_tables_t_intervals() -> None:
    import numpy as np
    import pandas as pd

    from dropout_lab.analysis.stats import t_interval
    from dropout_lab.reports.figures import plt, point_plot

    values = {"a": [0.80, 0.81, 0.83, 0.86], "b": [0.70, 0.75, 0.71, 0.72], "c": [0.9, 0.9, 0.9, 0.9]}
    runs = pd.DataFrame([{"model": k, "test_acc": v} for k, vs in values.items() for v in vs])
    fig = point_plot(runs, x="model", y="test_acc")
    ax = fig.axes[0]
    # The first line joins the means; each later one is a capped bar (segments separated by NaN).
    bars = [(np.nanmin(line.get_ydata()), np.nanmax(line.get_ydata())) for line in ax.lines[1:]]
    plt.close(fig)
    expected = [t_interval(vs) for vs in values.values()]
    assert len(bars) == 3 and expected[2] == (0.9, 0.9)  # all seeds equal: a zero-width bar, as in the tables
    for (low, high), bar in zip(expected, bars):
        assert bar == pytest.approx((low, high), abs=1e-9)


def test_point_plot_shows_every_seed_as_a_point() -> None:
    from dropout_lab.reports.figures import plt, point_plot

    runs = pd.DataFrame({"model": ["a"] * 5 + ["b"] * 3, "test_acc": [0.8, 0.81, 0.82, 0.83, 0.84, 0.7, 0.71, 0.72]})
    fig = point_plot(runs, x="model", y="test_acc")
    seeds = sorted(float(y) for c in fig.axes[0].collections[:2] for _, y in c.get_offsets())
    plt.close(fig)
    assert seeds == pytest.approx(sorted(runs["test_acc"]))  # one dot per seed, under the mean and its t-interval


def test_tuning_caveats_follow_the_trials_and_settings() -> None:
    import pandas as pd

    from dropout_lab.reports.analyses.tuning import design_caveats

    def trials(n: int, pruned_at: list[int]) -> pd.DataFrame:
        states = ["PRUNED"] * len(pruned_at) + ["COMPLETE"] * (n - len(pruned_at))
        return pd.DataFrame({"state": states, "epochs_run": pruned_at + [20] * (n - len(pruned_at))})

    notes = design_caveats("tpe", "median", 10, trials(11, [1, 1, 4]))
    assert any("budget of 10 trials lies within TPE's 10 random start-up trials (all 11" in n for n in notes)
    assert any("2 of the 3 pruned trials were stopped after epoch 1" in n for n in notes)
    assert design_caveats("tpe", "none", 25, trials(25, [])) == []  # TPE modelled 15 trials, nothing pruned
    assert design_caveats("random", "median", 5, trials(5, [])) == []


def test_tuning_report_reads_the_run_table(tmp_path: Path) -> None:
    """Best trial, pruned trials at their last reported value, and epochs run (pruned: reported, not curve rows)."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from dropout_lab.reports.analyses import tuning
    from dropout_lab.reports.inputs import load_study_data
    from dropout_lab.training.run_record import RunRecord

    study = optuna.create_study(direction="maximize")
    runs = ((0.1, TrialState.COMPLETE, [0.80, 0.82, 0.84]), (0.3, TrialState.COMPLETE, [0.81, 0.85, 0.86]),
            (0.7, TrialState.PRUNED, [0.6, 0.65]), (0.5, TrialState.COMPLETE, [0.8, 0.83, 0.85]))
    for p, state, reported in runs:
        done = state == TrialState.COMPLETE
        curves = [{"epoch": e + 1, "val_acc": v} for e, v in enumerate(reported)]
        record = RunRecord(config={"model": {"dropout_1": p}}, seed=0, config_hash=str(p),
                           status="completed" if done else "pruned",
                           curves=curves if done else curves[:-1])  # pruning stops a run before its curve row
        study.add_trial(optuna.trial.create_trial(
            state=state, value=reported[-1] if done else None,
            params={"model.dropout_1": p}, distributions={"model.dropout_1": FloatDistribution(0.0, 0.8)},
            user_attrs=record.trial_attrs(tmp_path), intermediate_values=dict(enumerate(reported))))
    spec = _spec(search_space={"model.dropout_1": {"type": "float", "low": 0.0, "high": 0.8}}, n_trials=4,
                 seeds=[0], analysis="tuning", pruner="median", sampler="random", margin=0.015)
    report = tuning.analyze(load_study_data(spec, study))
    assert report.answer == ("Best val_acc 0.8600 at model.dropout_1=0.300 (trial 1), after 4 trials: 3 complete, "
                             "1 pruned, 0 failed.")
    # 0.85 is within ±1.5 pp of 0.86, 0.84 is not.
    assert report.conclusions[1].startswith("Of the other complete trials, the runner-up is 1.00 pp away; 1 lie "
                                            "within ±1.5 pp of the best")
    trials = {t.name: t.frame for t in report.tables}["trials"].set_index("trial")
    assert trials.loc[2, "value"] == 0.65 and trials.loc[2, "epochs_run"] == 2 and trials.loc[1, "epochs_run"] == 3
    assert list(trials.index) == [1, 3, 0, 2]  # best first


def test_writer_ships_tidy_tables_and_shows_long_tables_as_excerpts(tmp_path: Path) -> None:
    from dropout_lab.reports.report_parts import Report, Table
    from dropout_lab.reports.writer import write_report

    spec = _spec(grid={"model": ["scratch", "concise"]}, seeds=[0, 1])
    runs = _runs("model", {"scratch": [0.84, 0.85], "concise": [0.85, 0.84]})
    per_epoch = pd.DataFrame({"epoch": range(1, 101), "mean_diff": [i / 7 for i in range(100)]})
    report = Report(tables=[Table("per_epoch", per_epoch, "Per epoch"), Table("short", per_epoch.head(15), "Short")],
                    conclusions=["c"])
    curves = pd.DataFrame({"trial": [0, 0], "seed": [0, 0], "epoch": [1, 2], "val_acc": [0.123456789, 0.5]})
    readme = write_report(spec, runs, report, tmp_path / "s",
                          {"curves": curves, "test_time": pd.DataFrame(), "activations": curves.head(1)})
    text = readme.read_text()
    assert pd.read_csv(tmp_path / "s" / "curves.csv")["val_acc"].tolist() == [0.123457, 0.5]  # 6 significant digits
    assert (tmp_path / "s" / "activations.csv").is_file() and not (tmp_path / "s" / "test_time.csv").exists()
    assert "[curves.csv](curves.csv), [activations.csv](activations.csv)" in text
    assert len(pd.read_csv(tmp_path / "s" / "per_epoch.csv")) == 100  # the CSV holds every row
    section = text.split("**Per epoch**")[1].split("**Short**")[0]
    shown = [line for line in section.splitlines() if line.startswith("|")][2:]
    assert section.startswith(" (excerpt: one row in 10 of its 100; all rows in [per_epoch.csv](per_epoch.csv))")
    assert [int(line.split("|")[1]) for line in shown] == list(range(10, 101, 10))  # every 10th epoch
    short = [line for line in text.split("**Short**")[1].splitlines() if line.startswith("|")]
    assert len(short) == 2 + 15  # up to 15 rows are shown whole


def test_index_is_built_from_the_answer_files(tmp_path: Path) -> None:
    from dropout_lab.reports.figures import plt
    from dropout_lab.reports.report_parts import Figure, Report
    from dropout_lab.reports.writer import write_index, write_report

    runs = _runs("model", {"scratch": [0.84, 0.85], "concise": [0.85, 0.84]})  # 4 runs of 1 s each
    grid = {"grid": {"model": ["scratch", "concise"]}, "seeds": [0, 1]}
    key, other = (Figure(name, plt.subplots()[0], f"{name} caption") for name in ("key", "other"))
    write_report(_spec(name="ex_b", question="Does B hold? Details.", **grid), runs,
                 Report(figures=[key, other], conclusions=["B holds.", "More."], answer_note="B may be best."),
                 tmp_path / "ex_b")
    write_report(_spec(name="ex_a", **grid), runs, Report(conclusions=["A holds."]), tmp_path / "ex_a")
    write_report(_spec(name="tune_c", search_space={"model.dropout_1": {"type": "float", "low": 0.0, "high": 0.8}},
                       n_trials=4, seeds=[0], analysis="tuning"), runs,
                 Report(conclusions=["Best a | b."]), tmp_path / "tune_c")
    text = (tmp_path / "ex_b" / "README.md").read_text()
    answer, results = text.split("## Answer")[1].split("## Design")[0], text.split("## Results")[1]
    assert answer == "\n\nB holds.\n\nB may be best.\n\n![key caption](key.png)\n\n*key caption*\n\n"
    assert "key.png" not in results and "![other caption](other.png)" in results
    assert json.loads((tmp_path / "ex_b" / "answer.json").read_text()) == {
        "study": "ex_b", "question": "Does B hold?", "answer": "B holds.", "key_figure": "key.png",
        "key_figure_caption": "key caption", "compute_min": 0.067, "tuning": False, "answer_note": "B may be best.",
        "compute": {"runs": 4, "completed": 4, "pruned": 0, "failed": 0, "epochs": 0, "wall_h": 0.0011,
                    "cpu_h": 0.0011, "threads_unrecorded": 4}}
    assert "## Answer\n\nA holds.\n\n## Design" in (tmp_path / "ex_a" / "README.md").read_text()

    index = write_index(tmp_path).read_text()
    headings = [line for line in index.splitlines() if line.startswith("## ")]
    assert headings == ["## ex_a", "## ex_b", "## Tuning studies behind exercise 7", "## Compute"]
    ex_a = index.split("## ex_a")[1].split("## ex_b")[0]
    assert ex_a == "\n\n*q?*\n\nA holds. [Full report](ex_a/README.md) · compute: 0.00 CPU-hours.\n\n"  # no figure
    assert ("B holds. B may be best. [Full report](ex_b/README.md) · compute: 0.00 CPU-hours.\n\n"
            "![key caption](ex_b/key.png)\n") in index
    assert "| [tune_c](tune_c/README.md) | Best a \\| b. | 0.00 CPU-hours |" in index
    assert index.split("\n## ")[-1].startswith("Compute\n") and "Total training compute of these studies" in index


def test_index_states_cpu_hours_runs_and_epochs_per_study_and_in_total(tmp_path: Path) -> None:
    """CPU-hours weigh each run's wall time by its recorded torch threads (1, said as a lower bound, where none is
    recorded); runs by state and epochs per study, the tuning studies in the total; an older answer is named."""
    from dropout_lab.reports.report_parts import PlanSection, Report
    from dropout_lab.reports.writer import write_index, write_report

    final = pd.DataFrame({"state": ["COMPLETE", "COMPLETE", "FAIL"], "threads": [2, 2, 2], "epochs_run": [50, 50, 10],
                          "wall_time_s": [1800.0, 1800.0, 360.0], "seed": [0, 1, 2]})
    tune = pd.DataFrame({"state": ["COMPLETE", "PRUNED"], "threads": [1, None], "epochs_run": [50, 10],
                         "wall_time_s": [3600.0, 720.0], "seed": [0, 0]})
    write_report(_spec(name="ex_a", grid={"model": ["a"]}, seeds=[0, 1, 2]), final,
                 Report(conclusions=["A holds."], answer_note="a may be best."), tmp_path / "ex_a",
                 plan=PlanSection(plan_lines=[], answer="1 of 1 comparisons decided.", declared=1, decided=1))
    write_report(_spec(name="tune_c", search_space={"model.dropout_1": {"type": "float", "low": 0.0, "high": 0.8}},
                       n_trials=2, seeds=[0], analysis="tuning"), tune, Report(conclusions=["Best c."]),
                 tmp_path / "tune_c")
    (tmp_path / "old_b").mkdir()  # an answer written before the compute counts
    (tmp_path / "old_b" / "README.md").write_text("# old_b\n")
    (tmp_path / "old_b" / "answer.json").write_text(json.dumps({
        "study": "old_b", "question": "B?", "answer": "B.", "key_figure": None, "key_figure_caption": None,
        "compute_min": 12.0, "tuning": False}))
    compute = json.loads((tmp_path / "ex_a" / "answer.json").read_text())["compute"]
    assert compute == {"runs": 3, "completed": 2, "pruned": 0, "failed": 1, "epochs": 110, "wall_h": 1.1,
                       "cpu_h": 2.2, "threads_unrecorded": 0}
    readme = (tmp_path / "tune_c" / "README.md").read_text()
    assert ("- training compute: 1.20 CPU-hours (1.20 h of run wall time, each run's weighted by its torch threads); "
            "1 run without a recorded thread count is counted at 1 thread (a lower bound") in readme
    assert "- runs: 2 runs (1 completed, 1 pruned, 0 failed), 60 epochs trained" in readme

    index = write_index(tmp_path).read_text()
    assert ("**Declared plan:** 1 of 1 comparisons decided. **The report's selection-aware reading (not a verdict of "
            "the plan):** a may be best. [Full report](ex_a/README.md) · compute: 2.20 CPU-hours.") in index
    assert "B. [Full report](old_b/README.md) · compute: 12.0 min of run wall time (CPU-hours not recorded" in index
    assert "| [tune_c](tune_c/README.md) | Best c. | 1.20 CPU-hours |" in index
    section = index.split("\n## Compute\n")[1]
    assert "| [ex_a](ex_a/README.md) | 2 | 0 | 1 | 110 | 1.10 | 2.20 |" in section
    assert "| [tune_c](tune_c/README.md) | 1 | 1 | 0 | 60 | 1.20 | 1.20 |" in section
    assert "| **total** | 3 | 1 | 1 | 170 | 2.30 | 3.40 |" in section and "old_b](" not in section
    assert ("Total training compute of these studies, the tuning studies included: 3.40 CPU-hours (2.30 h of run "
            "wall time, each run's weighted by its torch threads); 1 run without a recorded thread count is counted "
            "at 1 thread") in section
    assert "; 5 runs (3 completed, 1 pruned, 1 failed), 170 epochs trained." in section
    assert "Left out (answers written by an earlier version, without these counts; regenerate them): old_b." in section


def test_report_building_leaves_no_figure_open(tmp_path: Path) -> None:
    from dropout_lab.reports.figures import closing_new_figures
    from dropout_lab.reports.report_parts import Figure
    from dropout_lab.reports.writer import save_figures

    plt.close("all")
    save_figures([Figure(name, plt.subplots()[0], name) for name in ("a", "b")], tmp_path)
    assert (tmp_path / "a.png").is_file() and (tmp_path / "b.png").is_file() and plt.get_fignums() == []
    with pytest.raises(FileNotFoundError):  # a failed save still closes every figure
        save_figures([Figure("missing/a", plt.subplots()[0], "a"), Figure("b", plt.subplots()[0], "b")], tmp_path)
    assert plt.get_fignums() == []
    kept = plt.figure()
    with pytest.raises(ValueError), closing_new_figures():  # an analysis failing half-way leaves none open
        plt.subplots()
        raise ValueError("analysis failed")
    assert plt.get_fignums() == [kept.number]  # figures opened before are left alone


def test_noise_final_shows_how_well_each_tuning_objective_predicted_the_fresh_seed_final(tmp_path: Path) -> None:
    """Spearman's rank correlation between each tuning study's best value and its technique's final mean test
    accuracy, from the store; a tuning study missing from the store is named and left out."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial
    from scipy import stats

    from dropout_lab.reports.inputs import tuning_objectives
    from dropout_lab.store.backends import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat_interval=None)
    techniques = {"dropout": (0.5, 0.80, 0.81), "gamma": (0.3, 0.85, 0.84), "uniform": (0.2, 0.83, 0.85),
                  "gaussian": (0.4, 0.86, 0.86)}  # rate, tuning value (best trial), final mean test accuracy
    dists = {k: FloatDistribution(0.0, 1.0) for k in ("model.dropout_1", "model.dropout_2", "optim.lr")}
    rows = []
    for technique, (rate, value, final) in techniques.items():
        params = {"model.dropout_1": rate, "model.dropout_2": rate / 2, "optim.lr": 0.1}
        study = optuna.create_study(study_name=f"ex7_tune_{technique}", storage=storage, direction="maximize")
        study.add_trial(create_trial(params={**params, "model.dropout_1": 0.9}, distributions=dists, value=0.5))
        study.add_trial(create_trial(params=params, distributions=dists, value=value))  # the best trial
        rows += [{"noise": technique, "data.split": "per_seed", "optim.schedule": "cosine", **params, "seed": seed,
                  "test_acc": final + d,
                  "val_acc": final, "state": "COMPLETE", "wall_time_s": 1.0}
                 for seed, d in enumerate([-0.002, -0.001, 0, 0.001, 0.002])]
    refs = [f"ex7_tune technique={t}" for t in [*techniques, "block"]]  # block: no tuning study in the store
    spec = load_spec("ex7_noise", [f"tuned_from=[{','.join(repr(r) for r in refs)}]", "seeds=[0,1,2,3,4]",
                                   "goal=null"])
    runs = pd.DataFrame(rows).assign(trial=range(len(rows)))
    report = noise_final.analyze(StudyData(spec=spec, runs=runs, all_runs=runs, curves=pd.DataFrame(),
                                           tuning=tuning_objectives(spec, storage)))
    table = {t.name: t.frame for t in report.tables}["tuning_vs_final"].set_index("tuning_study")
    assert table.loc["ex7_tune_gamma", "technique"] == "gamma" and table.loc["ex7_tune_gamma", "final_n"] == 5
    assert table.loc["ex7_tune_gamma", "tuning_value"] == 0.85
    assert table.loc["ex7_tune_uniform", "final_test_acc"] == pytest.approx(0.85)
    assert pd.isna(table.loc["ex7_tune_block", "tuning_value"]) and table.loc["ex7_tune_block", "final_n"] == 0
    expected = stats.spearmanr([0.80, 0.85, 0.83, 0.86], [0.81, 0.84, 0.85, 0.86])
    (sentence,) = [c for c in report.conclusions if "Spearman" in c]
    assert f"Spearman rank correlation ρ = {expected.statistic:.2f} (n = 4 techniques, p = {expected.pvalue:.3g})" \
        in sentence and expected.statistic == pytest.approx(0.8)
    assert "best_val_acc on validation, the best trial's mean over 3 tuning seed(s)" in sentence
    assert "The tuning studies ex7_tune_block are not in this store" in sentence
    # Without the tuning studies in the store, the report says so instead.
    empty = open_storage(f"sqlite:///{tmp_path / 'empty.db'}", heartbeat_interval=None)
    report = noise_final.analyze(StudyData(spec=spec, runs=runs, all_runs=runs, curves=pd.DataFrame(),
                                           tuning=tuning_objectives(spec, empty)))
    assert any(c.startswith("How well tuning's objective predicted the fresh-seed final cannot be shown: only 0")
               for c in report.conclusions)
