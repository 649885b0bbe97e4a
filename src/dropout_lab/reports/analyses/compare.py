"""Generic comparison: every configuration against the first, paired on seeds, Holm-corrected."""

from __future__ import annotations

import pandas as pd

from dropout_lab.reports.figures import point_plot
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.model import Figure, Report, Table
from dropout_lab.reports.stats import (
    ci_text,
    level_ci,
    paired_differences,
    pct,
    significance,
    summarize_over_seeds,
    with_holm,
)

METRIC = "test_acc"


def summary_and_tests(data: StudyData, baseline: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-configuration summary and paired differences against ``baseline`` (Holm-adjusted p)."""
    summary = summarize_over_seeds(data.runs, data.keys, METRIC)
    diffs = paired_differences(data.runs, data.keys, METRIC, baseline)
    return summary, (with_holm(diffs) if not diffs.empty else diffs)


def describe_difference(row: pd.Series, name: str, base: str) -> str:
    """One sentence for a paired difference row."""
    return (f"{name} vs {base}: {pct(row['mean_diff'])} test accuracy ({ci_text(row['ci_low'], row['ci_high'])}, "
            f"paired t-test over {int(row['n_pairs'])} seeds, Holm-adjusted {significance(row['p_holm'])}, "
            f"Cohen's d_z = {row['cohens_dz']:.2f}).")


def analyze(data: StudyData) -> Report:
    """Summary table, paired differences against the first grid configuration, and a point plot."""
    report = Report()
    if data.runs.empty:
        return report
    base = {k: data.spec.grid[k][0] for k in data.keys}
    summary, diffs = summary_and_tests(data, base)
    report.tables.append(Table("summary", summary,
                               "Test accuracy per configuration over seeds (mean, std, n, 95% t-interval)"))
    if not diffs.empty:
        report.tables.append(Table("paired_differences", diffs, "Paired differences against the first configuration"))
    runs = data.runs.assign(config=data.label())
    report.figures.append(Figure("test_accuracy", point_plot(runs, "config", METRIC, xlabel="configuration",
                                                             ylabel="test accuracy"),
                                 "Test accuracy per configuration: seeds (dots), mean and 95% CI"))
    best = summary.sort_values("mean", ascending=False).iloc[0]
    report.conclusions.append(
        "Best configuration: " + ", ".join(f"{k}={best[k]}" for k in data.keys)
        + f" with test accuracy {best['mean']:.4f} ({level_ci(best['ci_low'], best['ci_high'])}, n={int(best['n'])}).")
    base_name = ", ".join(f"{k}={v}" for k, v in base.items())
    for _, row in diffs.iterrows():
        name = ", ".join(f"{k}={row[k]}" for k in data.keys)
        report.conclusions.append(describe_difference(row, name, base_name))
    return report
