"""Exercise 6: DropConnect (noise on weights) against dropout (noise on activations) at matched rates.

Grid: ``noise`` (the techniques; ``dropout`` is the reference) x a rate key (``model.dropout_1``,
with ``model.dropout_2`` tied to it). Accuracy is the test accuracy; cost is the wall time per
training epoch (``curves.seconds``, mean over a run's epochs).
"""

from __future__ import annotations

import pandas as pd

from dropout_lab.reports.figures import point_plot
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.model import Figure, Report, Table
from dropout_lab.reports.stats import (
    EQUIVALENT,
    HIGHER,
    INCONCLUSIVE,
    LOWER,
    ci_text,
    difference_verdict,
    direction,
    holm_text,
    level_ci,
    paired_differences,
    paired_log_ratios,
    pct,
    ratio_ci,
    row_equivalence_text,
    summarize_over_seeds,
    with_holm,
)

METRIC = "test_acc"
TECHNIQUE = "noise"
REFERENCE = "dropout"
ALL_RATES = "all"


def rate_key(data: StudyData) -> str | None:
    """The grid key that sets the rate: the first ``model.dropout_*`` key, else any other non-technique key."""
    others = [k for k in data.keys if k != TECHNIQUE]
    rates = [k for k in others if k.startswith("model.dropout")]
    return next(iter(rates or others), None)


def reference_technique(data: StudyData) -> str:
    """``dropout`` when the grid has it, else the grid's first technique."""
    values = list(data.spec.grid.get(TECHNIQUE, []))
    return REFERENCE if REFERENCE in values else str(values[0])


def accuracy_differences(runs: pd.DataFrame, rate: str, reference: str, margin: float = 0.005) -> pd.DataFrame:
    """Each technique minus the reference at each rate, paired on seeds (paired t-test, d_z, TOST within
    +-``margin``); Holm over all rows."""
    parts = [paired_differences(group, [TECHNIQUE], METRIC, {TECHNIQUE: reference}, margin=margin)
             .assign(**{rate: value})
             for value, group in runs.groupby(rate)]
    table = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    front = [TECHNIQUE, rate]
    return with_holm(table[[*front, *[c for c in table.columns if c not in front]]])


def epoch_seconds(data: StudyData, rate: str) -> pd.DataFrame:
    """Seconds per training epoch of each finished run: mean over its epochs, with technique, rate and seed."""
    curves = data.curves[data.curves["trial"].isin(data.runs["trial"])]
    per_run = curves.groupby("trial")["seconds"].mean().rename("seconds_per_epoch").reset_index()
    return per_run.merge(data.runs[["trial", TECHNIQUE, rate, "seed"]], on="trial")


def cost_ratios(seconds: pd.DataFrame, rate: str, reference: str) -> pd.DataFrame:
    """Seconds per epoch over the reference's, paired on seeds at each rate and on (seed, rate) pooled.

    Geometric-mean ratio with 95% CI from a paired t-test on log seconds; Holm over the per-rate rows.
    """
    per_rate = [paired_log_ratios(group, [TECHNIQUE], "seconds_per_epoch", {TECHNIQUE: reference})
                .assign(**{rate: str(value)}) for value, group in seconds.groupby(rate)]
    per_rate = with_holm(pd.concat([p for p in per_rate if not p.empty], ignore_index=True))
    pooled = seconds.assign(pair=seconds["seed"].astype(str) + "/" + seconds[rate].astype(str))
    pooled = paired_log_ratios(pooled, [TECHNIQUE], "seconds_per_epoch", {TECHNIQUE: reference}, pair="pair")
    pooled = pooled.assign(**{rate: ALL_RATES}, p_holm=pooled["p_value"])
    table = pd.concat([per_rate, pooled], ignore_index=True)
    front = [TECHNIQUE, rate]
    return table[[*front, *[c for c in table.columns if c not in front]]]


#: How a sentence states each :func:`difference_verdict` of an accuracy difference.
ACCURACY_WORDS = {HIGHER: "higher than", LOWER: "lower than", EQUIVALENT: "equivalent to",
                  INCONCLUSIVE: "not shown to differ from, nor to equal,"}


def _difference_sentence(row: pd.Series, rate: str, reference: str, margin: float) -> str:
    word = difference_verdict(row)
    tail = f"; {row_equivalence_text(row, margin)}" if word in (EQUIVALENT, INCONCLUSIVE) else ""
    return (f"At {rate} = {row[rate]}, {row[TECHNIQUE]}'s test accuracy is {ACCURACY_WORDS[word]} {reference}'s: "
            f"{pct(row['mean_diff'])} ({ci_text(row['ci_low'], row['ci_high'])}, paired t-test over "
            f"{int(row['n_pairs'])} seeds, {holm_text(row['p_holm'])}, Cohen's d_z = {row['cohens_dz']:.2f}{tail}).")


def _cost_sentence(row: pd.Series, rate: str, reference: str, seconds: pd.DataFrame) -> str:
    verdict = direction(row, "significantly more time", "significantly less time", "no significant difference in time",
                        1.0, "ratio")
    where = "pooled over rates" if row[rate] == ALL_RATES else f"at {rate} = {row[rate]}"
    cells = seconds if row[rate] == ALL_RATES else seconds[seconds[rate].astype(str) == row[rate]]
    mean = cells.groupby(TECHNIQUE)["seconds_per_epoch"].mean()
    return (f"Cost {where}: {row[TECHNIQUE]} takes {mean[row[TECHNIQUE]]:.3g} s vs {mean[reference]:.3g} s per epoch, "
            f"{row['ratio']:.3f}x {reference}'s time ({ratio_ci(row['ratio_ci_low'], row['ratio_ci_high'])}, paired "
            f"t-test on log seconds over {int(row['n_pairs'])} pairs, {holm_text(row['p_holm'])}): {verdict}.")


def _answer(diffs: pd.DataFrame, costs: pd.DataFrame, rate: str, reference: str, margin: float) -> str:
    parts = []
    for technique, rows in diffs.groupby(TECHNIQUE, sort=False):
        verdicts = {difference_verdict(r) for _, r in rows.iterrows()}
        overall = verdicts.pop() if len(verdicts) == 1 else "mixed"
        word = {HIGHER: "beats", LOWER: "is worse than", EQUIVALENT: f"is equivalent (within ±{100 * margin:g} pp) to",
                INCONCLUSIVE: "is inconclusive at this budget (neither significantly different nor equivalent) "
                              "against",
                "mixed": "differs by rate (or is undecided at some rates) from"}[overall]
        gaps = ", ".join(f"{pct(r['mean_diff'])} at {r[rate]}: {difference_verdict(r)}" for _, r in rows.iterrows())
        pooled = costs[(costs[TECHNIQUE] == technique) & (costs[rate] == ALL_RATES)]
        cost = f" and costs {pooled['ratio'].iloc[0]:.2f}x the time per epoch" if not pooled.empty else ""
        parts.append(f"At matched rates {technique} {word} {reference} in test accuracy ({gaps}; Holm, TOST){cost}")
    return "; ".join(parts) + "."


def analyze(data: StudyData) -> Report:
    """Accuracy per (technique, rate), paired differences against dropout per rate, and cost per epoch."""
    report = Report()
    rate = rate_key(data)
    if data.runs.empty or TECHNIQUE not in data.keys or rate is None:
        report.notes.append(f"Needs finished runs of a grid over `{TECHNIQUE}` and a rate key.")
        return report
    reference = reference_technique(data)
    summary = summarize_over_seeds(data.runs, [TECHNIQUE, rate], METRIC)
    margin = data.spec.margin
    diffs = accuracy_differences(data.runs, rate, reference, margin)
    seconds = epoch_seconds(data, rate)
    seconds_summary = summarize_over_seeds(seconds, [TECHNIQUE, rate], "seconds_per_epoch")
    costs = cost_ratios(seconds, rate, reference)
    report.tables.append(Table("accuracy", summary, "Test accuracy per technique and rate over seeds "
                                                    "(mean, std, n, 95% t-interval)"))
    report.tables.append(Table("paired_differences", diffs,
                               f"Test accuracy minus {reference}'s at the same rate, paired on seeds "
                               f"(paired t-test, Cohen's d_z), Holm over rates, TOST within ±{100 * margin:g} pp"))
    report.tables.append(Table("seconds_per_epoch", seconds_summary,
                               "Training seconds per epoch (mean over a run's epochs) per technique and rate, "
                               "over seeds (mean, std, n, 95% t-interval)"))
    report.tables.append(Table("cost_ratio", costs,
                               f"Seconds per epoch over {reference}'s, paired on seeds (per rate, Holm over rates) "
                               "and on (seed, rate) pooled: geometric-mean ratio, paired t-test on log seconds"))
    report.figures.append(Figure("test_accuracy", point_plot(data.runs, rate, METRIC, hue=TECHNIQUE,
                                                             xlabel=f"rate ({rate}, both layers)",
                                                             ylabel="test accuracy"),
                                 "Test accuracy per rate and technique: seeds (dots), mean and 95% CI"))
    report.figures.append(Figure("seconds_per_epoch", point_plot(seconds, rate, "seconds_per_epoch", hue=TECHNIQUE,
                                                                 xlabel=f"rate ({rate}, both layers)",
                                                                 ylabel="training seconds per epoch"),
                                 "Training time per epoch: runs (dots, mean over epochs), mean and 95% CI"))

    report.conclusions.append(_answer(diffs, costs, rate, reference, margin))
    report.conclusions += [_difference_sentence(r, rate, reference, margin) for _, r in diffs.iterrows()]
    best = summary.sort_values("mean", ascending=False).iloc[0]
    report.conclusions.append(f"Best cell: {TECHNIQUE}={best[TECHNIQUE]}, {rate}={best[rate]} with test accuracy "
                              f"{best['mean']:.4f} ({level_ci(best['ci_low'], best['ci_high'])}, n={int(best['n'])}).")
    report.conclusions += [_cost_sentence(r, rate, reference, seconds) for _, r in costs.iterrows()]
    report.notes.append("Times are wall seconds of training epochs measured while other jobs may share the machine; "
                        "pairing on seeds (runs of both techniques under similar load) reduces but does not remove "
                        "that noise.")
    report.notes.append("Selection: last epoch's test accuracy (`test_acc`) of every run.")
    return report
