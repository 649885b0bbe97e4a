"""Generic comparison: every configuration against the first, paired on seeds, Holm-corrected, with TOST."""

from __future__ import annotations

from typing import Any

import pandas as pd

from dropout_lab.analysis.stats import (
    HIGHER,
    LOWER,
    difference_verdict,
    paired_differences,
    seed_flips,
    summarize_over_seeds,
    with_holm,
)
from dropout_lab.reports.figures import point_plot
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.report_parts import Figure, Report, Table
from dropout_lab.reports.wording import ci_text, level_ci, pct, row_equivalence_text, seed_flip_text, significance

METRIC = "test_acc"
#: The test accuracy at each run's best-validation epoch (early stopping's choice); older stores lack it.
BEST_METRIC = "best_test_acc"
#: Which epoch the numbers come from, said once in every report that uses this module.
SELECTION_NOTE = ("Selection: every number is the last epoch's test accuracy (`test_acc`, fixed budget) unless it "
                  "says best-validation epoch (`best_test_acc`: the epoch early stopping would keep).")


def primary_metric(data: StudyData) -> str:
    """The column an analysis reads when it follows the declared plan: the plan's primary test column where the
    runs hold it (``best_test_acc`` for early stopping), else the last epoch's test accuracy."""
    plan = data.spec.plan
    if plan is not None and plan.test_column in data.runs and data.runs[plan.test_column].notna().any():
        return plan.test_column
    return METRIC


def has_best(runs: pd.DataFrame) -> bool:
    """Whether the runs carry their best-validation-epoch test accuracy."""
    return BEST_METRIC in runs and bool(runs[BEST_METRIC].notna().any())


def summary_and_tests(data: StudyData, baseline: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-configuration summary (with the best-epoch mean where stored) and paired differences against
    ``baseline`` (Holm-adjusted p, TOST within the study's margin)."""
    summary = summarize_over_seeds(data.runs, data.keys, METRIC)
    if has_best(data.runs):
        best = data.runs.groupby(data.keys, dropna=False)[BEST_METRIC].mean().rename("mean_best_test_acc")
        summary = summary.merge(best.reset_index(), on=data.keys, how="left")
    diffs = paired_differences(data.runs, data.keys, METRIC, baseline, margin=data.spec.margin)
    return summary, (with_holm(diffs) if not diffs.empty else diffs)


def verdict_phrase(row: pd.Series, margin: float) -> str:
    """What the tests allow one to say of a paired difference row: a difference, equivalence or nothing yet."""
    word = difference_verdict(row)
    if word in (HIGHER, LOWER):
        return f"significantly {word} after Holm"
    return row_equivalence_text(row, margin)


def describe_difference(row: pd.Series, name: str, base: str, margin: float | None = None) -> str:
    """One sentence for a paired difference row; with a ``margin``, ending in its verdict (TOST when not different)."""
    dz = row["cohens_dz"]
    text = (f"{name} vs {base}: {pct(row['mean_diff'])} test accuracy ({ci_text(row['ci_low'], row['ci_high'])}, "
            f"paired t-test over {int(row['n_pairs'])} seeds, Holm-adjusted {significance(row['p_holm'])}, "
            f"Cohen's d_z = {'n/a' if pd.isna(dz) else f'{dz:.2f}'})")
    if margin is not None and "tost_p" in row:
        text += f"; {verdict_phrase(row, margin)}"
    return text + "."


def verdicts(runs: pd.DataFrame, keys: list[str], baseline: dict[str, Any], margin: float) -> str:
    """Every configuration's verdict against ``baseline`` in one string (what :func:`seed_flips` compares)."""
    diffs = paired_differences(runs, keys, METRIC, baseline, margin=margin)
    if diffs.empty:
        return "no comparison"
    diffs = with_holm(diffs)
    words = [difference_verdict(r) for _, r in diffs.iterrows()]
    if len(words) == 1:
        return words[0]
    return "; ".join(", ".join(f"{k}={r[k]}" for k in keys) + f": {w}" for (_, r), w in zip(diffs.iterrows(), words))


def seed_robustness(data: StudyData, baseline: dict[str, Any]) -> str | None:
    """A sentence naming any single seed whose omission changes a verdict against ``baseline`` (else None)."""
    def verdict(runs: pd.DataFrame) -> str:
        return verdicts(runs, data.keys, baseline, data.spec.margin)

    return seed_flip_text(seed_flips(data.runs, verdict, seed="seed"), verdict(data.runs))


def analyze(data: StudyData) -> Report:
    """Summary table, paired differences against the first grid configuration, and a point plot."""
    report = Report()
    if data.runs.empty:
        return report
    base = {k: data.spec.grid[k][0] for k in data.keys}
    summary, diffs = summary_and_tests(data, base)
    report.tables.append(Table("summary", summary,
                               "Test accuracy per configuration over seeds (mean, std, n, 95% t-interval; last "
                               "epoch, plus the best-validation-epoch mean where stored)"))
    if not diffs.empty:
        report.tables.append(Table("paired_differences", diffs,
                                   "Paired differences against the first configuration (paired t-test, Holm; "
                                   f"TOST within ±{100 * data.spec.margin:g} pp)"))
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
        report.conclusions.append(describe_difference(row, name, base_name, data.spec.margin))
    if not diffs.empty and (flip := seed_robustness(data, base)):
        report.conclusions.append(flip)
    report.notes.append(SELECTION_NOTE)
    return report
