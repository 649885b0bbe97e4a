"""Exercise 7's final comparison: every tuned technique against tuned chapter dropout, 10 seeds, test set."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from dropout_lab.analysis.plan_verdicts import technique_labels
from dropout_lab.analysis.stats import HIGHER, INCONCLUSIVE, difference_verdict
from dropout_lab.reports.analyses.compare import (
    METRIC,
    SELECTION_NOTE,
    describe_difference,
    seed_robustness,
    summary_and_tests,
)
from dropout_lab.reports.figures import point_plot
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.report_parts import Figure, Report, Table
from dropout_lab.reports.wording import level_ci

BASELINE = "dropout"


def goal_sentence(data: StudyData, summary: pd.DataFrame, goal: float) -> str:
    """Whether the best technique's mean test accuracy meets ``goal``, with its 95% CI; if not, what its curves
    show (its best-validation epoch against the budget, and its validation accuracy there and at the end)."""
    best = summary.iloc[0]
    verdict = ("meets" if best["mean"] >= goal else "misses") + f" the declared goal of {goal:.4g}"
    if best["ci_low"] > goal or best["ci_high"] < goal:
        verdict += f" (its 95% CI lies wholly {'above' if best['ci_low'] > goal else 'below'} it)"
    text = (f"The best technique, {best['noise']}, reaches a mean test accuracy of {best['mean']:.4f} "
            f"({level_ci(best['ci_low'], best['ci_high'])}, n = {int(best['n'])}): it {verdict}.")
    if best["mean"] >= goal:
        return text
    runs = data.runs[data.runs["noise"] == best["noise"]]
    curves = data.curves[data.curves["trial"].isin(runs["trial"])]
    last_epoch = int(curves["epoch"].max()) if not curves.empty else data.spec.epochs
    peak = curves.loc[curves.groupby("trial")["val_acc"].idxmax()] if not curves.empty else curves
    final = curves[curves["epoch"] == last_epoch]
    if peak.empty:
        return text
    late = int((peak["epoch"] > 0.8 * last_epoch).sum())
    return (text + f" Why not, from its {len(peak)} runs' curves: their best validation accuracy "
            f"({peak['val_acc'].mean():.4f} on average) comes at epoch {peak['epoch'].mean():.0f} of {last_epoch} on "
            f"average ({late} of {len(peak)} in the last fifth, where a longer budget might still help), and they end "
            f"at {final['val_acc'].mean():.4f} validation accuracy with a training loss of "
            f"{final['train_loss'].mean():.4f}.")


def analyze(data: StudyData) -> Report:
    """Does any technique beat chapter dropout? Paired t-tests on seeds, Holm across techniques."""
    report = Report()
    if data.runs.empty or "noise" not in data.runs:
        return report
    data = replace(data, runs=data.runs.assign(noise=technique_labels(data.runs)))
    if BASELINE not in set(data.runs["noise"]):
        return report
    summary, diffs = summary_and_tests(data, {"noise": BASELINE})
    rate_columns = [c for c in ("model.dropout_1", "model.dropout_2") if c in data.runs]
    rates = data.runs.groupby("noise")[rate_columns].first().reset_index()
    summary = summary.merge(rates, on="noise").sort_values("mean", ascending=False)
    report.tables.append(Table("summary", summary,
                               "Test accuracy of each tuned technique (its tuned rates) over seeds (last epoch; "
                               "best-validation-epoch mean where stored)"))
    report.tables.append(Table("vs_dropout", diffs, "Each technique minus tuned chapter dropout, paired on seeds"))
    order = list(summary["noise"])
    fig = point_plot(data.runs, "noise", METRIC, xlabel="noise technique (tuned)", ylabel="test accuracy")
    fig.axes[0].set_xticks(range(len(order)))
    fig.axes[0].tick_params(axis="x", rotation=30)
    report.figures.append(Figure("test_accuracy", fig, "Test accuracy per tuned technique: seeds, mean and 95% CI"))
    words = {row["noise"]: difference_verdict(row) for _, row in diffs.iterrows()}
    winners = diffs[[words[n] == HIGHER for n in diffs["noise"]]]
    unsettled = [n for n, w in words.items() if w == INCONCLUSIVE]
    mentioned = set(winners["noise"])
    if winners.empty:
        best = diffs.sort_values("mean_diff", ascending=False).iloc[0]
        detail = describe_difference(best, best["noise"], BASELINE, data.spec.margin).split(": ", 1)[1]
        if unsettled:
            report.conclusions.append(
                f"No technique significantly beats tuned chapter dropout, but for {len(unsettled)} of {len(diffs)} "
                f"({', '.join(unsettled)}) the comparison is inconclusive at this budget (neither significant nor "
                f"equivalent within ±{100 * data.spec.margin:g} pp); the closest, {best['noise']}, differs by "
                + detail)
        else:
            report.conclusions.append(
                "No technique beats tuned chapter dropout on the test set (each is significantly worse or equivalent "
                f"within ±{100 * data.spec.margin:g} pp); the closest, {best['noise']}, differs by " + detail)
        mentioned.add(best["noise"])
    else:
        for _, row in winners.sort_values("mean_diff", ascending=False).iterrows():
            report.conclusions.append(f"{row['noise']} beats tuned chapter dropout: "
                                      + describe_difference(row, row["noise"], BASELINE, data.spec.margin))
    base = summary[summary["noise"] == BASELINE].iloc[0]
    report.conclusions.append(f"Tuned chapter dropout reaches {base['mean']:.4f} "
                              f"({level_ci(base['ci_low'], base['ci_high'])}).")
    for _, row in diffs.iterrows():
        if row["noise"] not in mentioned:
            report.conclusions.append(describe_difference(row, row["noise"], BASELINE, data.spec.margin))
    if data.spec.goal is not None:
        report.conclusions.append(goal_sentence(data, summary, data.spec.goal))
    if flip := seed_robustness(data, {"noise": BASELINE}):
        report.conclusions.append(flip)
    report.notes.append(SELECTION_NOTE)
    return report
