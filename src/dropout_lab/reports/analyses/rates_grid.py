"""Exercise 1: a grid over the two hidden layers' dropout rates; does "lower rate near the input" hold?"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure as MplFigure

from dropout_lab.analysis.stats import (
    EQUIVALENT,
    HIGHER,
    INCONCLUSIVE,
    LOWER,
    difference_verdict,
    excludes_zero,
    paired_with_tost,
    seed_flips,
    summarize_over_seeds,
    t_interval,
    with_holm,
)
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.report_parts import Figure, Report, Table
from dropout_lab.reports.wording import describe_test, level_ci, row_equivalence_text, seed_flip_text

P1, P2 = "model.dropout_1", "model.dropout_2"
METRIC = "test_acc"
P1_LABEL, P2_LABEL = "p1 (first hidden layer)", "p2 (second hidden layer)"


def cell_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, n and 95% t-interval of test accuracy per (p1, p2) cell."""
    return summarize_over_seeds(runs, [P1, P2], METRIC).sort_values([P1, P2]).reset_index(drop=True)


def heatmap(summary: pd.DataFrame) -> MplFigure:
    """Annotated heatmap of mean test accuracy (with the 95% CI half-width) over p1 x p2."""
    means = summary.pivot(index=P1, columns=P2, values="mean")
    half = summary.assign(h=(summary["ci_high"] - summary["ci_low"]) / 2).pivot(index=P1, columns=P2, values="h")
    text = means.map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    text = text + half.map(lambda h: "" if pd.isna(h) else f"\n±{h:.4f}")
    size = max(4.5, 1.25 * len(means.columns) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.8))
    sns.heatmap(means, annot=text, fmt="", cmap="viridis", ax=ax, annot_kws={"fontsize": 8},
                cbar_kws={"label": "mean test accuracy"})
    ax.invert_yaxis()  # p1 grows upwards, like a plot's y axis
    ax.set_xlabel(P2_LABEL)
    ax.set_ylabel(P1_LABEL)
    ax.set_title(f"Mean test accuracy over seeds (± 95% CI half-width), n = {int(summary['n'].max())}")
    fig.tight_layout()
    return fig


def swap_differences(runs: pd.DataFrame) -> pd.DataFrame:
    """Per seed and swap pair p_low < p_high: acc(p1=p_low, p2=p_high) - acc(p1=p_high, p2=p_low)."""
    wide = runs.pivot_table(index="seed", columns=[P1, P2], values=METRIC, aggfunc="mean")
    rates = sorted(set(runs[P1]) | set(runs[P2]))
    parts = []
    for low, high in combinations(rates, 2):
        if (low, high) in wide.columns and (high, low) in wide.columns:
            pair = wide[[(low, high), (high, low)]].dropna()
            parts.append(pd.DataFrame({"seed": pair.index, "p_low": low, "p_high": high,
                                       "lower_first": pair.iloc[:, 0].to_numpy(),
                                       "higher_first": pair.iloc[:, 1].to_numpy()}))
    if not parts:
        return pd.DataFrame(columns=["seed", "p_low", "p_high", "lower_first", "higher_first", "asymmetry"])
    frame = pd.concat(parts, ignore_index=True)
    return frame.assign(asymmetry=frame["lower_first"] - frame["higher_first"])


#: What each swap pair supports, by :func:`difference_verdict` of its asymmetry.
SUPPORTS = {HIGHER: "lower rate first", LOWER: "higher rate first", EQUIVALENT: "equivalent within the margin",
            INCONCLUSIVE: "inconclusive"}


def swap_table(diffs: pd.DataFrame, margin: float = 0.005) -> pd.DataFrame:
    """One row per swap pair: mean accuracies, paired t-test of the asymmetry, d_z, Holm across pairs, TOST within
    +-``margin`` and what the pair supports (``better``)."""
    rows = []
    for (low, high), group in diffs.groupby(["p_low", "p_high"]):
        rows.append({"p_low": low, "p_high": high, "acc_lower_first": group["lower_first"].mean(),
                     "acc_higher_first": group["higher_first"].mean(),
                     **paired_with_tost(group["asymmetry"], margin)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = with_holm(table)
    table["better"] = [SUPPORTS[difference_verdict(row)] for _, row in table.iterrows()]
    return table


def overall_asymmetry(diffs: pd.DataFrame, margin: float = 0.005) -> dict[str, float]:
    """Per seed, the mean asymmetry over all swap pairs; then its mean, 95% CI and paired t-test over seeds."""
    counts = diffs.groupby("seed")["asymmetry"].count()
    complete = counts[counts == counts.max()].index  # seeds that have every pair, so seeds stay comparable
    per_seed = diffs[diffs["seed"].isin(complete)].groupby("seed")["asymmetry"].mean()
    return paired_with_tost(per_seed, margin)


#: The words of :func:`asymmetry_verdict`.
HOLDS, REVERSED, NOT_SUPPORTED, UNDECIDED, UNTESTABLE = ("holds", "reversed", "not supported", "undecided",
                                                         "untestable")


def asymmetry_verdict(overall: Mapping[str, Any]) -> str:
    """What the mean swap asymmetry says of "lower rate near the input": a word of the constants above."""
    if not overall or pd.isna(overall["ci_low"]):
        return UNTESTABLE
    direction = excludes_zero(overall)
    if direction:
        return HOLDS if direction > 0 else REVERSED
    return NOT_SUPPORTED if overall.get("equivalent") else UNDECIDED


def seed_robustness(runs: pd.DataFrame, margin: float) -> str | None:
    """A sentence naming any single seed whose omission changes :func:`asymmetry_verdict` (else None)."""
    def verdict(frame: pd.DataFrame) -> str:
        diffs = swap_differences(frame)
        return asymmetry_verdict(overall_asymmetry(diffs, margin) if not diffs.empty else {})

    return seed_flip_text(seed_flips(runs, verdict, seed="seed"), verdict(runs))


def lower_first_verdict(table: pd.DataFrame, overall: dict[str, float], margin: float = 0.005) -> str:
    """The study's answer: does the lower-first configuration win on average, and how many pairs support it?"""
    if table.empty:
        return ("\u201cLower rate near the input\u201d cannot be tested: the grid has no swapped pair "
                "(p1, p2), (p2, p1).")
    m = len(table)
    wins = int((table["mean_diff"] > 0).sum())
    counts = table["better"].value_counts()
    sig_for, sig_against = int(counts.get(SUPPORTS[HIGHER], 0)), int(counts.get(SUPPORTS[LOWER], 0))
    equivalent, unsettled = int(counts.get(SUPPORTS[EQUIVALENT], 0)), int(counts.get(SUPPORTS[INCONCLUSIVE], 0))
    word = asymmetry_verdict(overall)
    if word == UNTESTABLE:
        verdict = "cannot be decided (fewer than two seeds)"
    elif word in (HOLDS, REVERSED):
        verdict = ("holds on average over the swap pairs" if word == HOLDS else
                   "is reversed on average over the swap pairs (higher rate near the input is better)")
    elif word == NOT_SUPPORTED:
        verdict = (f"is not supported: the mean asymmetry is {row_equivalence_text(overall, margin)}, "
                   "so the order of the rates makes no difference larger than the margin")
    else:
        verdict = f"is neither supported nor refuted: the mean asymmetry is {row_equivalence_text(overall, margin)}"
    return (f"\u201cLower rate near the input\u201d {verdict}: in {wins} of {m} swap pairs ({wins / m:.0%}) the "
            f"lower-first configuration (p1 < p2) has the higher mean test accuracy; pair by pair (Holm, TOST within "
            f"±{100 * margin:g} pp) {sig_for} of {m} support it significantly, {sig_against} significantly favour the "
            f"other order, {equivalent} are equivalent and {unsettled} inconclusive"
            + (" (it holds pair by pair)" if sig_for == m else f" (not a rule: only {sig_for} of {m} pairs back it)")
            + "; mean asymmetry acc(p1, p2) - acc(p2, p1) over the pairs: "
            f"{describe_test(overall)}.")


def swap_figure(diffs: pd.DataFrame) -> MplFigure:
    """Per-seed swap asymmetry per pair (dots) with mean and 95% t-interval; 0 = no asymmetry."""
    frame = diffs.assign(pair=[f"{lo:g} / {hi:g}" for lo, hi in zip(diffs["p_low"], diffs["p_high"])],
                         asym_pp=100 * diffs["asymmetry"])
    order = list(dict.fromkeys(frame.sort_values(["p_low", "p_high"])["pair"]))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(order) + 2), 4))
    ax.axhline(0, color="grey", lw=1, ls="--")
    sns.stripplot(data=frame, x="pair", y="asym_pp", order=order, alpha=0.4, color="C0", ax=ax)
    sns.pointplot(data=frame, x="pair", y="asym_pp", order=order, errorbar=t_interval, linestyle="none",
                  capsize=0.15, color="C3", ax=ax)
    ax.set_xlabel("swap pair: lower rate / higher rate")
    ax.set_ylabel("acc(lower, higher) - acc(higher, lower) [pp]")
    ax.set_title("Swap asymmetry: > 0 means the lower rate near the input is better")
    fig.tight_layout()
    return fig


def best_cell(summary: pd.DataFrame) -> str:
    """The configuration with the highest mean test accuracy, with its CI."""
    best = summary.sort_values("mean", ascending=False).iloc[0]
    overlapping = int((summary["ci_high"] >= best["ci_low"]).sum()) - 1
    return (f"Best cell: p1 = {best[P1]:g}, p2 = {best[P2]:g} with mean test accuracy {best['mean']:.4f} "
            f"({level_ci(best['ci_low'], best['ci_high'])}, n = {int(best['n'])}); {overlapping} of the other "
            f"{len(summary) - 1} cells have a 95% CI reaching its lower bound.")


def analyze(data: StudyData) -> Report:
    """Heatmap, swap asymmetries with Holm-corrected paired tests, the verdict and the best cell."""
    report = Report()
    if data.runs.empty or not {P1, P2} <= set(data.runs.columns):
        report.notes.append(f"rates_grid needs finished runs with grid keys {P1} and {P2}.")
        return report
    runs = data.runs.dropna(subset=[METRIC])
    summary = cell_summary(runs)
    diffs = swap_differences(runs)
    margin = data.spec.margin
    table = swap_table(diffs, margin)
    overall = overall_asymmetry(diffs, margin) if not diffs.empty else {}
    report.conclusions.append(lower_first_verdict(table, overall, margin))
    if flip := seed_robustness(runs, margin):
        report.conclusions.append(flip)
    report.conclusions.append(best_cell(summary))
    report.tables.append(Table("cells", summary,
                               "Test accuracy per (p1, p2) cell over seeds (mean, std, n, 95% t-interval)"))
    report.figures.append(Figure("test_accuracy_heatmap", heatmap(summary),
                                 "Mean test accuracy per (p1, p2) with the 95% CI half-width"))
    if not table.empty:
        report.tables.append(Table("swap_asymmetry", table,
                                   "acc(p1 = p_low, p2 = p_high) - acc(p1 = p_high, p2 = p_low), paired on seeds "
                                   "(paired t-test, 95% CI, Cohen's d_z, Holm across the swap pairs; TOST within "
                                   f"±{100 * margin:g} pp; better: what the pair supports)"))
        report.figures.append(Figure("swap_asymmetry", swap_figure(diffs),
                                     "Swap asymmetry per pair: seeds (dots), mean and 95% t-interval"))
    report.notes.append("The mean asymmetry averages, per seed, the asymmetries of all swap pairs, then tests that "
                        "per-seed average against 0 over the seeds (seeds missing a pair are left out).")
    report.notes.append("Selection: last epoch's test accuracy (`test_acc`) of every run.")
    return report
