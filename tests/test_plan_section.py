"""A planned study's report: the declared plan first, verdicts only from it, its figure, labelled sensitivity."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from dropout_lab.analysis.plan_verdicts import plan_looks, plan_table, plan_verdicts
from dropout_lab.analysis.stats import prediction_interval, prediction_percentile
from dropout_lab.config.analysis_plan import AnalysisPlan, Comparison, Reference, SeedDesign
from dropout_lab.config.study_spec import StudySpec
from dropout_lab.reports.analyses import compare
from dropout_lab.reports.figures import closing_new_figures, report_theme
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.plan_section import FIGURE_NAME, plan_section, stored_seeds
from dropout_lab.reports.wording import percentile_text
from dropout_lab.reports.writer import write_index, write_report

MARGIN = 0.005
WHY = {"b vs a": "b's margin: one wobble of validation accuracy", "c vs a": "c's margin: a tenth of the spread",
       "d vs a": "d's margin: what a reader would notice"}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _plan() -> AnalysisPlan:
    comparisons = [Comparison(name=name, treatment={"model": name[0]}, control={"model": "a"}, margin=MARGIN, why=why,
                              family="rest" if name == "d vs a" else "main") for name, why in WHY.items()]
    return AnalysisPlan(comparisons=comparisons, references=[
        Reference(name="a's level", cell={"model": "a"}, value=0.85, why="one run's spread"),
        Reference(name="b's goal", cell={"model": "b"}, value=0.86, why="a population claim", goal=True)])


def _spec(seeds: object, plan: AnalysisPlan | None = None, name: str = "planned") -> StudySpec:
    return StudySpec(name=name, question="Do b, c and d differ from a? Details.", epochs=1,
                     grid={"model": ["a", "b", "c", "d"]}, seeds=seeds, plan=plan)


def _runs(n_seeds: int) -> pd.DataFrame:
    """b beats a by 3 pp at its best-validation epoch but not at its last epoch; c equals a within 0.05 pp; d's
    difference is noise of 2 pp around 0."""
    rng = np.random.default_rng(0)
    a = 0.85 + rng.normal(0, 0.004, n_seeds)
    best = {"a": a, "b": a + 0.03 + rng.normal(0, 0.002, n_seeds), "c": a + rng.normal(0, 0.0003, n_seeds),
            "d": a + rng.normal(0, 0.02, n_seeds)}
    last = {**best, "b": a + rng.normal(0, 0.0003, n_seeds)}
    return pd.DataFrame([{"model": m, "seed": s, "best_test_acc": best[m][s], "test_acc": last[m][s],
                          "val_acc": last[m][s], "state": "COMPLETE", "wall_time_s": 1.0}
                         for m in best for s in range(n_seeds)])


def _write(spec: StudySpec, runs: pd.DataFrame, out: Path) -> tuple[str, StudyData]:
    data = StudyData(spec=spec, runs=runs, all_runs=runs, curves=pd.DataFrame())
    with closing_new_figures():
        with report_theme():
            report, plan = compare.analyze(data), plan_section(data)
        readme = write_report(spec, runs, report, out / spec.name, plan=plan)
    return readme.read_text(), data


def test_planned_report_opens_with_the_plan_and_answers_from_its_verdicts(tmp_path: Path) -> None:
    spec = _spec(SeedDesign(first=0, min=4, max=8, batch=2), _plan())
    text, data = _write(spec, _runs(8), tmp_path)
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert heads[:5] == ["## Declared analysis plan", "## Verdicts (declared plan)", "## Sensitivity analyses",
                         "## Design", "## Exploratory analyses (not part of the declared plan)"]
    assert text.index("**Question.**") < text.index("## Declared analysis plan") and "## Answer" not in text
    declared = text.split("## Declared analysis plan")[1].split("## Verdicts")[0]
    for why in [*WHY.values(), "one run's spread"]:
        assert why in declared  # printed from the spec
    assert "`test_acc_at_best_val`" in declared and "alpha: 0.05" in declared and "correction: holm" in declared
    assert "n = 4, 6, 8 seeds" in declared and "family `main` (2 comparisons" in declared
    assert "**b vs a**: model=b vs model=a; margin ±0.5 pp" in declared and "`test_acc_last_epoch`" in declared

    # The verdict table is plan_verdicts' of the stored runs at the last look, all 8 seeds.
    table = plan_table(data.runs)
    expected = plan_verdicts(plan_looks(table, spec.plan, [4, 6, 8], list(range(8))), spec.plan, spec.design)
    shipped = pd.read_csv(tmp_path / "planned" / "plan_verdicts.csv")
    pd.testing.assert_frame_equal(shipped, expected, check_dtype=False, check_exact=False, rtol=1e-9)
    verdicts = dict(zip(shipped["comparison"], shipped["verdict"]))
    assert verdicts == {"b vs a": "higher", "c vs a": "equivalent", "d vs a": "undecided"}
    assert bool(shipped.set_index("comparison").loc["d vs a", "max_hit"])
    section = text.split("## Verdicts (declared plan)")[1].split("## Sensitivity")[0]
    needed = int(np.ceil(shipped.set_index("comparison").loc["d vs a", "seeds_needed"]))
    assert section.lstrip().startswith("2 of 3 comparisons decided: b vs a higher; c vs a equivalent; d vs a "
                                       f"undecided (at max seeds, 8; a decision would need about {needed} seeds).")
    row = shipped.set_index("comparison").loc["b vs a"]
    assert (f"- b vs a: {100 * row['mean_diff']:+.2f} pp (95% CS [{100 * row['cs_low']:.2f}, "
            f"{100 * row['cs_high']:.2f}] pp over 8 paired seeds; holm-adjusted p = ") in section
    assert f"**higher**, decided at the look with {int(row['seeds_taken'])} seeds." in section
    assert "d vs a: " in section and "**undecided at max seeds** (8); a decision would need about " in section
    # A printed run against the prediction interval for one run of a's 8 seeds; a goal against the mean's interval.
    claims = pd.read_csv(tmp_path / "planned" / "plan_references.csv").set_index("name")
    level, goal = claims.loc["a's level"], claims.loc["b's goal"]
    a = data.runs.loc[data.runs["model"] == "a", "best_test_acc"]
    assert (level["low"], level["high"]) == pytest.approx(prediction_interval(a))
    assert level["percentile"] == pytest.approx(prediction_percentile(a, 0.85))
    assert (f"- a's level (0.85) lies **inside** the 95% prediction interval [{level['low']:.4f}, {level['high']:.4f}] "
            f"for one run of this protocol (8 seeds, mean {a.mean():.4f}, sd {a.std():.4f}; "
            f"{percentile_text(level['percentile'])}): **consistent**.") in section
    assert (f"- b's goal: mean {goal['mean']:.4f} over 8 seeds, interval [{goal['low']:.4f}, {goal['high']:.4f}] "
            "(the seeds' spread and the test set's sampling error) against 0.86: goal **met**.") in section
    assert (f"References: a's level (0.85) lies inside the 95% prediction interval for one run [{level['low']:.4f}, "
            f"{level['high']:.4f}] (consistent); b's goal: goal met (mean {goal['mean']:.4f}, interval "
            f"[{goal['low']:.4f}, {goal['high']:.4f}] over 8 seeds).") in section
    assert "a printed run: consistent when it lies inside the 95% prediction interval for one run" in declared
    assert "| one run    |" in section and "| mean       |" in section  # the table says which interval each has

    # The figure: each comparison's confidence sequence at every n from the first look to the last stored.
    assert (tmp_path / "planned" / f"{FIGURE_NAME}.png").is_file() and f"]({FIGURE_NAME}.png)" in section
    assert plt.get_fignums() == []

    # Sensitivity: b's advantage exists only at the best-validation epoch, so the last-epoch reading disagrees.
    sensitivity = text.split("## Sensitivity analyses")[1].split("## Design")[0]
    assert "**Sensitivity: test accuracy of the last epoch's weights (a fixed budget)**" in sensitivity
    disagreements = [line for line in sensitivity.splitlines() if "disagrees with the verdict" in line]
    assert len(disagreements) == 1 and disagreements[0].startswith("- b vs a: on the test accuracy of the last epoch")
    assert "(“higher”)" in disagreements[0]

    # The kind's own analysis follows, labelled exploratory, its sentences not verdicts.
    exploratory = text.split("## Exploratory analyses (not part of the declared plan)")[1]
    assert "### Exploratory findings (not verdicts)" in exploratory and "## Conclusion" not in text
    assert "model=b vs model=a: " in exploratory and "model=b vs model=a: " not in text.split("## Exploratory")[0]
    assert "they ignore that stopping rule" in exploratory.split("###")[0]  # a sequential design: fixed-n caveat

    # answer.json and the index take the answer from the plan.
    answer = json.loads((tmp_path / "planned" / "answer.json").read_text())
    assert answer["answer"].startswith("2 of 3 comparisons decided: ") and answer["plan"] == {"declared": 3,
                                                                                            "decided": 2}
    assert answer["key_figure"] == f"{FIGURE_NAME}.png"
    assert "References: a's level (0.85) lies inside the 95% prediction interval" in answer["answer"]
    index = write_index(tmp_path).read_text()
    assert f"**Declared plan:** {answer['answer']} [Full report](planned/README.md)" in index


@pytest.mark.slow  # over 5 s
def test_a_design_is_read_at_the_looks_its_stored_seeds_reach(tmp_path: Path) -> None:
    spec = _spec(SeedDesign(first=0, min=4, max=8, batch=2), _plan())
    runs = _runs(8)
    partial = runs[(runs["seed"] < 6) | ((runs["seed"] == 6) & (runs["model"] != "d"))]  # seed 6 lacks d's run
    assert stored_seeds(partial, ["model"], list(range(8))) == 6
    text, _ = _write(spec, partial.reset_index(drop=True), tmp_path)
    shipped = pd.read_csv(tmp_path / "planned" / "plan_verdicts.csv")
    assert set(shipped["n_pairs"]) == {6} and not shipped["max_hit"].any()
    assert "undecided** with 6 seeds so far (more looks are declared); a decision would need about " in text
    early, _ = _write(spec, runs[runs["seed"] < 3].reset_index(drop=True), tmp_path / "early")
    assert "No look of the declared plan yet: 3 of the 4 seeds of the first look" in early
    assert not (tmp_path / "early" / "planned" / "plan_verdicts.csv").exists()
    empty, _ = _write(_spec(list(range(4)), _plan()), runs.iloc[:0], tmp_path / "empty")  # a fixed list, none done
    assert "No look of the declared plan yet: 0 of the 4 seeds" in empty


def test_a_study_without_a_plan_keeps_its_report(tmp_path: Path) -> None:
    runs = _runs(4)
    spec = _spec(list(range(4)))
    data = StudyData(spec=spec, runs=runs, all_runs=runs, curves=pd.DataFrame())
    assert plan_section(data) is None
    text, _ = _write(spec, runs, tmp_path)
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert heads == ["## Answer", "## Design", "## Results", "## Conclusion", "## Notes"]
    assert "plan" not in json.loads((tmp_path / "planned" / "answer.json").read_text())
    assert "Declared" not in text and "Exploratory" not in text


def test_build_report_answers_a_planned_study_from_its_store(tmp_path: Path) -> None:
    """``study report``'s path: the store's trials -> run table -> plan section -> README, answer.json, index."""
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution

    from dropout_lab.reports.build import build_report
    from dropout_lab.training.run_record import RunRecord

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for row in _runs(4).itertuples():
        record = RunRecord(config={"model": row.model}, seed=row.seed, config_hash=row.model, status="completed",
                           final={"test_acc": row.test_acc, "val_acc": row.val_acc},
                           best={"epoch": 1, "test_acc": row.best_test_acc, "val_acc": row.val_acc}, wall_time_s=1.0)
        study.add_trial(optuna.trial.create_trial(
            value=row.val_acc, params={"model": row.model, "seed": row.seed},
            distributions={"model": CategoricalDistribution(["a", "b", "c", "d"]), "seed": IntDistribution(0, 3)},
            user_attrs=record.trial_attrs(tmp_path)))
    spec = _spec(list(range(4)), _plan())
    text = build_report(spec, study, tmp_path / "reports").read_text()
    shipped = pd.read_csv(tmp_path / "reports" / "planned" / "plan_verdicts.csv")
    assert list(shipped["n_pairs"]) == [4, 4, 4] and not shipped["max_hit"].any()  # a fixed list: no max to hit
    assert text.index("## Declared analysis plan") < text.index("## Verdicts (declared plan)") < text.index(
        "## Exploratory analyses (not part of the declared plan)")
    assert "a fixed list of 4 seeds [0, 1, 2, 3], read once at n = 4" in text
    assert "stopping rule" not in text  # a fixed list of seeds: the exploratory tests need no caveat
    answer = json.loads((tmp_path / "reports" / "planned" / "answer.json").read_text())["answer"]
    assert answer.startswith(f"{int(shipped['verdict'].isin(['higher', 'lower', 'equivalent']).sum())} of 3 "
                             "comparisons decided: b vs a ")
    assert f"**Declared plan:** {answer}" in (tmp_path / "reports" / "README.md").read_text()
    assert (tmp_path / "reports" / "planned" / f"{FIGURE_NAME}.png").is_file()  # from 2 seeds to 4


def test_a_comparison_may_read_an_instrument() -> None:
    """A comparison with ``metric: test_time.accuracy`` reads the instrument rows of each run, selected by keys."""
    runs = _runs(4)
    runs = runs[runs["model"] == "a"].assign(trial=range(4)).reset_index(drop=True)
    rows = pd.DataFrame([{"trial": t, "seed": t, "mode": mode, "T": 10, "accuracy": 0.85 + 0.001 * t + gain}
                         for t in range(4) for mode, gain in (("standard", 0.0), ("mc", 0.02))])
    plan = AnalysisPlan(comparisons=[Comparison(name="mc vs standard", treatment={"mode": "mc"},
                                                control={"mode": "standard"}, margin=MARGIN, why="w",
                                                metric="test_time.accuracy")])
    spec = StudySpec(name="tt", question="q?", epochs=1, grid={"model": ["a"]}, seeds=list(range(4)), plan=plan)
    data = StudyData(spec=spec, runs=runs, all_runs=runs, curves=pd.DataFrame(), instruments={"test_time": rows})
    section = plan_section(data)
    assert section is not None
    (verdicts,) = [t.frame for t in section.tables if t.name == "plan_verdicts"]
    assert verdicts.loc[0, "mean_diff"] == pytest.approx(0.02) and verdicts.loc[0, "n_pairs"] == 4
    assert "metric `test_time.accuracy` instead of the primary" in "\n".join(section.plan_lines)


@pytest.mark.parametrize("metric,pp", [(None, True), ("test_time.accuracy", True), ("best_test_acc", True),
                                       ("test_time.nll", False), ("test_time.ece", False),
                                       ("activations.var", False)])
def test_only_accuracies_are_worded_in_percentage_points(metric: str | None, pp: bool) -> None:
    from dropout_lab.reports.plan_section import in_pp
    assert in_pp(metric) is pp


def test_a_plan_of_the_primary_metric_only_gives_no_verdicts_and_keeps_the_analysis_answer(tmp_path: Path) -> None:
    """A tuning study's plan names its primary metric only: no empty verdict tables, and answer.json keeps the
    analysis's own answer (no plan counts for the index)."""
    import json

    spec = _spec([0, 1, 2, 3], AnalysisPlan(primary="test_acc_at_best_val"), name="primary_only")
    text, _ = _write(spec, _runs(4), tmp_path)
    verdicts = text.split("## Verdicts (declared plan)")[1].split("## Design")[0]
    assert "declares its primary metric only" in verdicts and "|" not in verdicts
    assert "## Sensitivity analyses" not in text
    answer = json.loads((tmp_path / "primary_only" / "answer.json").read_text())
    assert "plan" not in answer and "primary metric only" not in answer["answer"] and answer["answer"]
