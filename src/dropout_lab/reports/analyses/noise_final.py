"""Exercise 7's final comparison: every tuned technique against tuned chapter dropout on fresh seeds, test set; which
techniques may be best, selection-aware (multiple comparison with the best, bootstrap P(best)); the goal; and how
well each tuning study's objective predicted its technique's fresh-seed result (Spearman rank correlation)."""

from __future__ import annotations

import math
from dataclasses import replace

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure as MplFigure
from scipy import stats

from dropout_lab.analysis.best import best_subset, prob_best, seeds_by_configuration
from dropout_lab.analysis.plan_verdicts import cell_mask, plan_table, reference_claims, technique_labels
from dropout_lab.analysis.stats import ALPHA, HIGHER, INCONCLUSIVE, difference_verdict
from dropout_lab.reports.analyses.compare import (
    METRIC,
    SELECTION_NOTE,
    describe_difference,
    primary_metric,
    seed_robustness,
    summary_and_tests,
)
from dropout_lab.reports.figures import point_plot
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.report_parts import Figure, Report, Table
from dropout_lab.reports.wording import level_ci

BASELINE = "dropout"
#: Bootstrap resamples of the seeds for P(best).
RESAMPLES = 10_000
#: The columns of ``best_technique.csv``, highest mean first.
BEST_COLUMNS = ["technique", "n_seeds", "mean", "ci_low", "ci_high", "p_best", "may_be_best", "beaten_by", "p_beaten"]


def best_technique(data: StudyData, metric: str) -> tuple[pd.DataFrame | None, str]:
    """Which techniques may be best, selection-aware: per technique its mean ``metric`` and 95% t-CI on the seeds
    every technique has, bootstrap P(best) (:func:`prob_best`) and whether it is in the best subset
    (:func:`best_subset`, at the plan's alpha); and one sentence. None and why not below two techniques or seeds."""
    wide = seeds_by_configuration(data.runs, "noise", metric)
    techniques, seeds = wide.shape[1], wide.shape[0]
    if techniques < 2 or seeds < 2:
        return None, (f"Which technique is best cannot be read yet: {techniques} technique(s) share {seeds} seed(s) "
                      f"with `{metric}` stored (it needs two of each).")
    alpha = data.spec.plan.alpha if data.spec.plan is not None else ALPHA
    design = data.spec.design
    table = best_subset(data.runs, "noise", metric, alpha=alpha, n_opt=design.min if design else None)
    table = table.assign(p_best=table["noise"].map(prob_best(data.runs, "noise", metric, resamples=RESAMPLES)))
    table = table.rename(columns={"noise": "technique"})[BEST_COLUMNS]
    may = table.loc[table["may_be_best"], "technique"]
    ranked = table.sort_values("p_best", ascending=False, kind="stable")
    level = f"{100 * (1 - alpha):g}%"
    tests = ("anytime-valid one-sided tests, as the seeds were added until the plan decided" if design
             else "one-sided paired t-tests")
    sentence = (f"The techniques that may be best at {level} (multiple comparison with the best on {seeds} paired "
                f"seeds of `{metric}`: {tests}, Holm over all {techniques * (techniques - 1)} ordered pairs; the set "
                "holds the "
                f"truly best with probability at least {level}): {', '.join(may)}; bootstrap P(best) "
                f"({RESAMPLES:,} paired resamples of the seeds): "
                + ", ".join(f"{r.technique} {r.p_best:.2f}" for r in ranked.itertuples()) + ".")
    return table, sentence


def p_best_figure(table: pd.DataFrame) -> MplFigure:
    """Bootstrap P(best) per technique (highest mean first), coloured by membership of the best subset."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    frame = table.assign(subset=table["may_be_best"].map({True: "may be best", False: "beaten"}))
    sns.barplot(data=frame, x="technique", y="p_best", hue="subset", hue_order=["may be best", "beaten"],
                dodge=False, ax=ax)
    ax.set_ylim(0, 1)
    ax.set_xlabel("noise technique (tuned)")
    ax.set_ylabel("bootstrap P(best)")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    ax.legend(title=None, fontsize="small")
    fig.tight_layout()
    return fig


def _against(value: float, goal: float, low: float, high: float, name: str, kind: str) -> str:
    """'meets the declared goal of 0.89 (its 95% CI lies wholly above it)' and the like (``kind``: CI or CS)."""
    text = ("meets" if value >= goal else "misses") + f" the {name} of {goal:.4g}"
    if low > goal or high < goal:
        text += f" (its 95% {kind} lies wholly {'above' if low > goal else 'below'} it)"
    return text


def goal_sentence(data: StudyData, table: pd.DataFrame, metric: str, goal: float) -> str:
    """The top technique's mean ``metric`` (``table``: :func:`best_technique`'s, highest mean first) with its 95% CI
    against ``goal`` and the spec's stretch goal; that the top of k means is biased upward, pointing to the declared
    reference on chapter dropout and to the best subset; if the goal is missed, what the top technique's curves
    show (its best-validation epoch against the budget, and its validation accuracy there and at the end)."""
    top, stretch = table.iloc[0], data.spec.stretch_goal
    kind = "CS" if data.spec.design else "CI"  # sequential seeds: anytime-valid confidence sequences
    verdict = _against(top["mean"], goal, top["ci_low"], top["ci_high"], "declared goal", kind)
    if stretch is not None:
        verdict += " and " + _against(top["mean"], stretch, top["ci_low"], top["ci_high"], "stretch goal", kind)
    text = (f"The top technique by mean `{metric}`, {top['technique']}, reaches {top['mean']:.4f} "
            f"({level_ci(top['ci_low'], top['ci_high'], kind)}, n = {int(top['n_seeds'])} seeds): it {verdict}. "
            "The top of "
            f"{len(table)} means is biased upward (the winner's curse: the technique picked for its high mean tends "
            "to have drawn lucky seeds), so this reads the goal, it does not test it")
    plan = data.spec.plan
    references = [r.name for r in plan.references if r.goal] if plan is not None else []
    base = table[table["technique"] == BASELINE]
    if not base.empty:
        declared = f" (the plan's reference “{'”, “'.join(references)}”)" if references else ""
        text += (f"; the unbiased check is the declared reference on chapter dropout, a cell fixed before the "
                 f"runs{declared}: dropout reaches {base['mean'].iloc[0]:.4f} "
                 f"({level_ci(base['ci_low'].iloc[0], base['ci_high'].iloc[0], kind)})")
    if references and plan is not None:
        claims = reference_claims(plan_table(data.runs, data.instruments), plan, design=data.spec.design)
        text += ("; these intervals cover seeds scored on this one test set (the mean score of new runs on it). On new "
                 "images the test set's own sampling error adds to them, whatever the number of seeds: with it, "
                 + "; ".join(f"the reference “{r.name}” reads {r.verdict} (interval [{r.low:.4f}, {r.high:.4f}], "
                             f"±{100 * r.test_error:.2f} pp of it the test set's)"
                             for r in claims[claims["goal"]].itertuples()))
    subset = table[table["may_be_best"]]
    short = subset[subset["mean"] < goal]
    text += (f". Every technique that may be best ({', '.join(subset['technique'])}) has a mean of at least "
             f"{goal:.4g}." if short.empty else
             f". Not every technique that may be best has a mean of at least {goal:.4g}: "
             + ", ".join(f"{r.technique} {r.mean:.4f}" for r in short.itertuples()) + ".")
    if top["mean"] >= goal:
        return text
    runs = data.runs[data.runs["noise"] == top["technique"]]
    if data.curves.empty or "trial" not in runs:
        return text
    curves = data.curves[data.curves["trial"].isin(runs["trial"])]
    if curves.empty:
        return text
    last_epoch = int(curves["epoch"].max())
    peak = curves.loc[curves.groupby("trial")["val_acc"].idxmax()]
    final = curves[curves["epoch"] == last_epoch]
    late = int((peak["epoch"] > 0.8 * last_epoch).sum())
    return (text + f" Why the top technique misses, from its {len(peak)} runs' curves: their best validation "
            f"accuracy ({peak['val_acc'].mean():.4f} on average) comes at epoch {peak['epoch'].mean():.0f} of "
            f"{last_epoch} on average ({late} of {len(peak)} in the last fifth, where a longer budget might still "
            f"help), and they end at {final['val_acc'].mean():.4f} validation accuracy with a training loss of "
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
    metric = primary_metric(data)
    best, best_text = best_technique(data, metric)
    report.conclusions.append(best_text)
    report.answer_note = best_text
    if best is not None:
        report.tables.append(Table("best_technique", best,
                                   f"Which technique may be best, on `{metric}` over the seeds every technique has: "
                                   "mean, 95% interval (a t-CI; an anytime-valid confidence sequence when seeds "
                                   "were added sequentially), bootstrap P(best), and whether it is in the best "
                                   "subset (beaten "
                                   "by: the techniques whose one-sided paired test against it rejects after Holm)"))
        report.figures.append(Figure("p_best", p_best_figure(best),
                                     f"Bootstrap P(best) per technique on `{metric}` ({RESAMPLES:,} paired resamples "
                                     "of the seeds), coloured by membership of the best subset"))
        if data.spec.goal is not None:
            report.conclusions.append(goal := goal_sentence(data, best, metric, data.spec.goal))
            report.answer_note = f"{best_text} {goal}"
    if flip := seed_robustness(data, {"noise": BASELINE}):
        report.conclusions.append(flip)
    if data.tuning is not None:
        table, sentence = rank_correlation(data, stored, metric)
        if table is not None:
            report.tables.append(table)
        report.conclusions.append(sentence)
    report.notes.append(SELECTION_NOTE)
    report.notes.append("Each technique was tuned by one search (its tuning study); the intervals here cover the "
                        "fresh seeds (initialization, data order, validation split, noise), not the search itself: "
                        "another search could have picked another winner (Bouthillier et al., 2021). The rank "
                        "correlation above shows how well the searches' objectives carried over.")
    return report
