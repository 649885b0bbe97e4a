"""Exercise 7's final comparison: every tuned technique against tuned chapter dropout, 10 seeds, test set; and how
well each tuning study's objective predicted its technique's fresh-seed result (Spearman rank correlation)."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
from scipy import stats

from dropout_lab.analysis.plan_verdicts import cell_mask, technique_labels
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


def tuning_vs_final(data: StudyData, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each technique's tuning objective (its tuning study's best trial value) beside its final mean ``metric`` on
    fresh seeds; ``runs`` are the final runs with their stored ``noise`` (before :func:`technique_labels`)."""
    assert data.tuning is not None
    labels = technique_labels(runs)
    rows = []
    for _, tuning in data.tuning.iterrows():
        mine = runs[cell_mask(runs, tuning["cell"])] if tuning["cell"] is not None else runs.iloc[:0]
        rows.append({"technique": labels[mine.index[0]] if len(mine) else None,
                     "tuning_study": tuning["tuning_study"], "tuning_objective": tuning["objective"],
                     "tuning_value": tuning["tuning_value"], "tuning_seeds": tuning["tuning_seeds"],
                     f"final_{metric}": mine[metric].mean() if len(mine) else None, "final_n": len(mine)})
    return pd.DataFrame(rows)


def rank_correlation(data: StudyData, runs: pd.DataFrame, metric: str) -> tuple[Table | None, str]:
    """The table of :func:`tuning_vs_final` and one sentence: Spearman's rank correlation between the tuning
    objective and the final mean (``scipy.stats.spearmanr``), with n and p; or why it cannot be shown."""
    table = tuning_vs_final(data, runs, metric)
    final = f"final_{metric}"
    missing = table.loc[table["tuning_value"].isna(), "tuning_study"].tolist()
    both = table.dropna(subset=["tuning_value", final])
    gap = (f" The tuning studies {', '.join(missing)} are not in this store (or hold no complete trial), so they "
           "are left out." if missing else "")
    if len(both) < 3:
        return (Table("tuning_vs_final", table, "Tuning objective against the fresh-seed final, per technique")
                if len(both) else None,
                f"How well tuning's objective predicted the fresh-seed final cannot be shown: only {len(both)} "
                f"technique(s) have both a stored tuning study and final runs (a rank correlation needs 3).{gap}")
    result = stats.spearmanr(both["tuning_value"], both[final])
    rho, p = float(result.statistic), float(result.pvalue)
    objective = ", ".join(sorted(set(both["tuning_objective"])))
    seeds = ", ".join(str(int(n)) for n in sorted(set(both["tuning_seeds"])))
    strength = "undefined (a constant column)" if math.isnan(rho) else f"ρ = {rho:.2f}"
    sentence = (f"Tuning's objective ({objective} on validation, the best trial's mean over {seeds} tuning seed(s)) "
                f"against each technique's final mean {metric} on fresh seeds: Spearman rank correlation {strength} "
                f"(n = {len(both)} techniques, p = {p:.3g}); near 1, tuning ranked the techniques as the final "
                f"comparison did.{gap}")
    table = table.assign(tuning_rank=table["tuning_value"].rank(ascending=False),
                         final_rank=table[final].rank(ascending=False))
    return Table("tuning_vs_final", table, "Each technique's tuning objective (its tuning study's best trial) and its "
                                           f"final mean {metric} on fresh seeds, with their ranks (1: best)"), sentence


def analyze(data: StudyData) -> Report:
    """Does any technique beat chapter dropout? Paired t-tests on seeds, Holm across techniques."""
    report = Report()
    if data.runs.empty or "noise" not in data.runs:
        return report
    stored = data.runs
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
    if data.tuning is not None:
        plan = data.spec.plan
        metric = plan.test_column if plan is not None and plan.test_column in stored else METRIC
        table, sentence = rank_correlation(data, stored, metric)
        if table is not None:
            report.tables.append(table)
        report.conclusions.append(sentence)
    report.notes.append(SELECTION_NOTE)
    return report
