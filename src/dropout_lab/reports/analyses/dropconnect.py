"""Exercise 6: DropConnect (noise on weights) against dropout (noise on activations) at matched rates.

Grid: ``noise`` (the techniques; ``dropout`` is the reference) x a rate key (``model.dropout_1``,
with ``model.dropout_2`` tied to it). Accuracy is the test accuracy. Cost is not derived from the study's
wall times (a population member's seconds are an equal share of its population's): it is measured by
``benchmarks/bench_dropconnect.py``.
"""

from __future__ import annotations

from functools import partial

import pandas as pd

from dropout_lab.analysis.stats import (
    EQUIVALENT,
    HIGHER,
    INCONCLUSIVE,
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
from dropout_lab.reports.wording import ci_text, holm_text, level_ci, pct, row_equivalence_text, seed_flip_text

METRIC = "test_acc"
TECHNIQUE = "noise"
REFERENCE = "dropout"
#: Why the report states no cost, and where the cost is measured.
COST_NOTE = ("Cost is not measured from this study's wall times: most runs train in fused populations, where each "
             "member's seconds are an equal share of its population's, so the runs of one population have the same "
             "seconds and are no independent measurements of a run's cost. DropConnect's cost per epoch against "
             "dropout's is measured by `benchmarks/bench_dropconnect.py` (interleaved repetitions, per-run and as a "
             "population member; see benchmarks/README.md).")


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


def verdicts(runs: pd.DataFrame, rate: str, reference: str, margin: float) -> str:
    """Each technique's :func:`difference_verdict` at each rate after Holm, in one string (for :func:`seed_flips`)."""
    diffs = accuracy_differences(runs, rate, reference, margin)
    return "; ".join(f"{r[TECHNIQUE]} at {r[rate]}: {difference_verdict(r)}" for _, r in diffs.iterrows())


def seed_robustness(runs: pd.DataFrame, rate: str, reference: str, margin: float) -> str | None:
    """A sentence naming any single seed whose omission changes a verdict (else None)."""
    verdict = partial(verdicts, rate=rate, reference=reference, margin=margin)
    return seed_flip_text(seed_flips(runs, verdict, seed="seed"), verdict(runs))


#: How a sentence states each :func:`difference_verdict` of an accuracy difference.
ACCURACY_WORDS = {HIGHER: "higher than", LOWER: "lower than", EQUIVALENT: "equivalent to",
                  INCONCLUSIVE: "not shown to differ from, nor to equal,"}


def _difference_sentence(row: pd.Series, rate: str, reference: str, margin: float) -> str:
    word = difference_verdict(row)
    tail = f"; {row_equivalence_text(row, margin)}" if word in (EQUIVALENT, INCONCLUSIVE) else ""
    return (f"At {rate} = {row[rate]}, {row[TECHNIQUE]}'s test accuracy is {ACCURACY_WORDS[word]} {reference}'s: "
            f"{pct(row['mean_diff'])} ({ci_text(row['ci_low'], row['ci_high'])}, paired t-test over "
            f"{int(row['n_pairs'])} seeds, {holm_text(row['p_holm'])}, Cohen's d_z = {row['cohens_dz']:.2f}{tail}).")


def _answer(diffs: pd.DataFrame, rate: str, reference: str, margin: float) -> str:
    parts = []
    for technique, rows in diffs.groupby(TECHNIQUE, sort=False):
        words = {difference_verdict(r) for _, r in rows.iterrows()}
        overall = words.pop() if len(words) == 1 else "mixed"
        word = {HIGHER: "beats", LOWER: "is worse than", EQUIVALENT: f"is equivalent (within ±{100 * margin:g} pp) to",
                INCONCLUSIVE: "is inconclusive at this budget (neither significantly different nor equivalent) "
                              "against",
                "mixed": "differs by rate (or is undecided at some rates) from"}[overall]
        gaps = ", ".join(f"{pct(r['mean_diff'])} at {r[rate]}: {difference_verdict(r)}" for _, r in rows.iterrows())
        parts.append(f"At matched rates {technique} {word} {reference} in test accuracy ({gaps}; Holm, TOST)")
    return "; ".join(parts) + "."


def analyze(data: StudyData) -> Report:
    """Accuracy per (technique, rate) and paired differences against dropout per rate (cost: see ``COST_NOTE``)."""
    report = Report()
    rate = rate_key(data)
    if data.runs.empty or TECHNIQUE not in data.keys or rate is None:
        report.notes.append(f"Needs finished runs of a grid over `{TECHNIQUE}` and a rate key.")
        return report
    reference = reference_technique(data)
    summary = summarize_over_seeds(data.runs, [TECHNIQUE, rate], METRIC)
    margin = data.spec.margin
    diffs = accuracy_differences(data.runs, rate, reference, margin)
    report.tables.append(Table("accuracy", summary, "Test accuracy per technique and rate over seeds "
                                                    "(mean, std, n, 95% t-interval)"))
    report.tables.append(Table("paired_differences", diffs,
                               f"Test accuracy minus {reference}'s at the same rate, paired on seeds "
                               f"(paired t-test, Cohen's d_z), Holm over rates, TOST within ±{100 * margin:g} pp"))
    report.figures.append(Figure("test_accuracy", point_plot(data.runs, rate, METRIC, hue=TECHNIQUE,
                                                             xlabel=f"rate ({rate}, both layers)",
                                                             ylabel="test accuracy"),
                                 "Test accuracy per rate and technique: seeds (dots), mean and 95% CI"))

    report.conclusions.append(_answer(diffs, rate, reference, margin))
    report.conclusions += [_difference_sentence(r, rate, reference, margin) for _, r in diffs.iterrows()]
    if flip := seed_robustness(data.runs, rate, reference, margin):
        report.conclusions.append(flip)
    best = summary.sort_values("mean", ascending=False).iloc[0]
    report.conclusions.append(f"Best cell: {TECHNIQUE}={best[TECHNIQUE]}, {rate}={best[rate]} with test accuracy "
                              f"{best['mean']:.4f} ({level_ci(best['ci_low'], best['ci_high'])}, n={int(best['n'])}).")
    report.notes.append(COST_NOTE)
    report.notes.append("Selection: last epoch's test accuracy (`test_acc`) of every run.")
    return report
