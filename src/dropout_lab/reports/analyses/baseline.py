"""Baseline: the chapter's two implementations at the chapter's setting, against the book."""

from __future__ import annotations

from dropout_lab.reports.analyses.compare import METRIC, describe_difference, summary_and_tests
from dropout_lab.reports.figures import curve_plot, point_plot
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.model import Figure, Report, Table
from dropout_lab.reports.stats import level_ci

#: The book's own d2l code on this machine (chapter setting, validation = test set), for reference.
BOOK_TEST_ACC = 0.852


def analyze(data: StudyData) -> Report:
    """Are scratch and concise the same? How do they compare with the book's result?"""
    report = Report()
    if data.runs.empty or "model" not in data.keys:
        return report
    summary, diffs = summary_and_tests(data, {"model": "scratch"})
    report.tables.append(Table("summary", summary, "Test accuracy per implementation over seeds"))
    report.tables.append(Table("paired_differences", diffs, "concise minus scratch, paired on seeds"))
    report.figures.append(Figure("test_accuracy", point_plot(data.runs, "model", METRIC, xlabel="implementation",
                                                             ylabel="test accuracy"),
                                 "Test accuracy of the two implementations: seeds, mean and 95% CI"))
    if not data.curves.empty:
        report.figures.append(Figure("validation_curves",
                                     curve_plot(data.curves, "val_acc", "model", "validation accuracy"),
                                     "Validation accuracy per epoch, mean over seeds with 95% CI band"))
    row = diffs.iloc[0]
    same = row["ci_low"] <= 0 <= row["ci_high"]
    verdict = ("The two implementations show no statistically significant difference" if same
               else "The two implementations differ")
    report.conclusions.append(f"{verdict}: " + describe_difference(row, "concise", "scratch"))
    for _, s in summary.iterrows():
        inside = s["ci_low"] <= BOOK_TEST_ACC <= s["ci_high"]
        report.conclusions.append(
            f"{s['model']}: mean test accuracy {s['mean']:.4f} ({level_ci(s['ci_low'], s['ci_high'])}, "
            f"n={int(s['n'])}); "
            f"the book's code gave {BOOK_TEST_ACC} on this machine, "
            + ("inside" if inside else f"{'above' if BOOK_TEST_ACC > s['ci_high'] else 'below'}")
            + " this interval.")
    report.notes.append("The book trains on all 60k images and reports accuracy on the test set it also validates "
                        "on; here 10k training images are held out for validation, so 50k are used for training.")
    return report
