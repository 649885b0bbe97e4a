"""Baseline: the chapter's two implementations at its setting; where one run of the book's code should fall."""

from __future__ import annotations

import pandas as pd

from dropout_lab.analysis.stats import EQUIVALENT, INCONCLUSIVE, difference_verdict, prediction_interval
from dropout_lab.reports.analyses.compare import (
    METRIC,
    SELECTION_NOTE,
    describe_difference,
    seed_robustness,
    summary_and_tests,
)
from dropout_lab.reports.figures import curve_plot, point_plot
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.report_parts import Figure, Report, Table
from dropout_lab.reports.wording import level_ci

HEADS = {EQUIVALENT: "The two implementations are equivalent",
         INCONCLUSIVE: "Whether the two implementations differ is inconclusive at this budget"}


def with_prediction_intervals(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with each implementation's 95% prediction interval for one new run (``pi_low``, ``pi_high``)."""
    bounds = {model: prediction_interval(group[METRIC]) for model, group in runs.groupby("model")}
    return summary.assign(pi_low=[bounds[m][0] for m in summary["model"]],
                          pi_high=[bounds[m][1] for m in summary["model"]])


def level_sentence(s: pd.Series) -> str:
    """Mean, its CI and the prediction interval of one implementation."""
    return (f"{s['model']}: mean test accuracy {s['mean']:.4f} ({level_ci(s['ci_low'], s['ci_high'])}, "
            f"n={int(s['n'])}); one new run is expected in [{s['pi_low']:.4f}, {s['pi_high']:.4f}] (95% prediction "
            "interval, mean ± t·s·√(1 + 1/n)): compare a single run of the book's code with this interval, not with "
            "the CI of the mean.")


def analyze(data: StudyData) -> Report:
    """Are scratch and concise the same? Where should one run of either (or of the book's code) fall?"""
    report = Report()
    if data.runs.empty or "model" not in data.keys:
        return report
    summary, diffs = summary_and_tests(data, {"model": "scratch"})
    summary = with_prediction_intervals(summary, data.runs)
    report.tables.append(Table("summary", summary, "Test accuracy per implementation over seeds (last epoch): mean, "
                                                   "95% CI of the mean, 95% prediction interval for one new run"))
    report.tables.append(Table("paired_differences", diffs, "concise minus scratch, paired on seeds (paired t-test; "
                                                            f"TOST within ±{100 * data.spec.margin:g} pp)"))
    report.figures.append(Figure("test_accuracy", point_plot(data.runs, "model", METRIC, xlabel="implementation",
                                                             ylabel="test accuracy"),
                                 "Test accuracy of the two implementations: seeds, mean and 95% CI"))
    if not data.curves.empty:
        report.figures.append(Figure("validation_curves",
                                     curve_plot(data.curves, "val_acc", "model", "validation accuracy"),
                                     "Validation accuracy per epoch, mean over seeds with 95% CI band"))
    row = diffs.iloc[0]
    head = HEADS.get(difference_verdict(row), "The two implementations differ")
    report.conclusions.append(f"{head}: " + describe_difference(row, "concise", "scratch", data.spec.margin))
    if flip := seed_robustness(data, {"model": "scratch"}):
        report.conclusions.append(flip)
    report.conclusions += [level_sentence(s) for _, s in summary.iterrows()]
    report.notes.append(SELECTION_NOTE)
    report.notes.append("The book trains on all 60k images and reports accuracy on the test set it also validates "
                        "on; here 10k training images are held out for validation, so 50k are used for training. "
                        "The `baseline_book` study runs the book's protocol.")
    return report
