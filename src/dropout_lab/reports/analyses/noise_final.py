"""Exercise 7's final comparison: every tuned technique against tuned chapter dropout, 10 seeds, test set."""

from __future__ import annotations

from dropout_lab.reports.analyses.compare import METRIC, describe_difference, summary_and_tests
from dropout_lab.reports.figures import point_plot
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.model import Figure, Report, Table
from dropout_lab.reports.stats import level_ci

BASELINE = "dropout"


def analyze(data: StudyData) -> Report:
    """Does any technique beat chapter dropout? Paired t-tests on seeds, Holm across techniques."""
    report = Report()
    if data.runs.empty or "noise" not in data.runs or BASELINE not in set(data.runs["noise"]):
        return report
    summary, diffs = summary_and_tests(data, {"noise": BASELINE})
    rate_columns = [c for c in ("model.dropout_1", "model.dropout_2") if c in data.runs]
    rates = data.runs.groupby("noise")[rate_columns].first().reset_index()
    summary = summary.merge(rates, on="noise").sort_values("mean", ascending=False)
    report.tables.append(Table("summary", summary,
                               "Test accuracy of each tuned technique (its tuned rates) over seeds"))
    report.tables.append(Table("vs_dropout", diffs, "Each technique minus tuned chapter dropout, paired on seeds"))
    order = list(summary["noise"])
    fig = point_plot(data.runs, "noise", METRIC, xlabel="noise technique (tuned)", ylabel="test accuracy")
    fig.axes[0].set_xticks(range(len(order)))
    fig.axes[0].tick_params(axis="x", rotation=30)
    report.figures.append(Figure("test_accuracy", fig, "Test accuracy per tuned technique: seeds, mean and 95% CI"))
    winners = diffs[(diffs["mean_diff"] > 0) & (diffs["p_holm"] < 0.05)]
    mentioned = set(winners["noise"])
    if winners.empty:
        best = diffs.sort_values("mean_diff", ascending=False).iloc[0]
        report.conclusions.append(
            f"No technique beats tuned chapter dropout on the test set; the closest, {best['noise']}, differs by "
            + describe_difference(best, best["noise"], BASELINE).split(": ", 1)[1])
        mentioned.add(best["noise"])
    else:
        for _, row in winners.sort_values("mean_diff", ascending=False).iterrows():
            report.conclusions.append(f"{row['noise']} beats tuned chapter dropout: "
                                      + describe_difference(row, row["noise"], BASELINE))
    base = summary[summary["noise"] == BASELINE].iloc[0]
    report.conclusions.append(f"Tuned chapter dropout reaches {base['mean']:.4f} "
                              f"({level_ci(base['ci_low'], base['ci_high'])}).")
    for _, row in diffs.iterrows():
        if row["noise"] not in mentioned:
            report.conclusions.append(describe_difference(row, row["noise"], BASELINE))
    return report
