"""Exercise 5: a 2x2 factorial (e.g. dropout x weight decay); are the two effects additive?

The two grid keys are the factors; each key's first grid value is its "off" level, the second its "on" level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure as MplFigure

from dropout_lab.analysis.stats import (
    excludes_zero,
    paired_with_tost,
    seed_flips,
    summarize_over_seeds,
    t_interval,
    tost_of,
    two_way_anova,
    with_holm,
)
from dropout_lab.reports.analyses.compare import BEST_METRIC, SELECTION_NOTE, primary_metric
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.labels import key_name, levels_by_rates, value_text
from dropout_lab.reports.report_parts import Figure, Report, Table
from dropout_lab.reports.wording import ci_text, describe_test, equivalence_text, seed_flip_text

METRIC = "test_acc"


@dataclass(frozen=True)
class Factor:
    """A two-level grid key: its column, readable name, (off, on) levels and their names."""

    key: str
    name: str
    off: Any
    on: Any
    names: dict[Any, str] = field(default_factory=dict, compare=False)

    def level_name(self, value: Any) -> str:
        """'no dropout', 'weight decay=0.0005', ...: by the stored dropout rates when they tell the levels apart."""
        return self.names.get(value) or value_text(self.name, value)


def make_factor(runs: pd.DataFrame, key: str, off: Any, on: Any) -> Factor:
    """A factor named by what its levels change: 'dropout' when they differ in their stored rates, else the key."""
    by_rates = levels_by_rates(runs[runs[key].isin([off, on])], [key])
    if by_rates is not None:
        return Factor(key, "dropout", off, on, by_rates)
    return Factor(key, key_name(key), off, on)


def find_factors(data: StudyData) -> tuple[Factor, Factor] | None:
    """The two grid keys with exactly two levels among the finished runs, in the spec's order (None otherwise)."""
    if len(data.keys) != 2:
        return None
    factors = []
    for key in data.keys:
        present = set(data.runs[key])
        levels = [v for v in data.spec.grid[key] if v in present]
        if len(levels) != 2:
            return None
        factors.append(make_factor(data.runs, key, levels[0], levels[1]))
    return factors[0], factors[1]


#: Where a planned study's interaction margin comes from (:func:`interaction_margin`).
MARGIN_SOURCE = "the smallest margin the declared plan gives any comparison"


def interaction_margin(data: StudyData) -> float:
    """The margin of the interaction's TOST: the smallest of the declared plan's comparison margins (the finest
    effect the study declared it cares about), else the study's ``margin``."""
    plan = data.spec.plan
    return min(c.margin for c in plan.comparisons) if plan is not None and plan.comparisons else data.spec.margin


def cell_table(runs: pd.DataFrame, a: Factor, b: Factor, metric: str = METRIC) -> pd.DataFrame:
    """Seeds x the four cells (neither, a_only, b_only, both) of ``metric``, seeds with all four cells only."""
    wide = runs.pivot_table(index="seed", columns=[a.key, b.key], values=metric, aggfunc="mean")
    columns = {"neither": (a.off, b.off), "a_only": (a.on, b.off), "b_only": (a.off, b.on), "both": (a.on, b.on)}
    present = {name: wide[col] if col in wide.columns else pd.Series(np.nan, index=wide.index)
               for name, col in columns.items()}
    return pd.DataFrame(present).dropna()


def effects_table(cells: pd.DataFrame, a: Factor, b: Factor, margin: float) -> pd.DataFrame:
    """Main effects, single effects, combined effect, interaction and combined-vs-best-single, paired on seeds
    (paired t-test, Holm across the rows, TOST within +-``margin``)."""
    a_alone, b_alone = cells["a_only"] - cells["neither"], cells["b_only"] - cells["neither"]
    best_single = "a_only" if cells["a_only"].mean() >= cells["b_only"].mean() else "b_only"
    best_name = f"{a.name} only" if best_single == "a_only" else f"{b.name} only"
    effects = {
        (f"main effect of {a.name}", "mean over the other factor of (on - off)"):
            (a_alone + cells["both"] - cells["b_only"]) / 2,
        (f"main effect of {b.name}", "mean over the other factor of (on - off)"):
            (b_alone + cells["both"] - cells["a_only"]) / 2,
        (f"{a.name} alone", f"{a.name} only - neither"): a_alone,
        (f"{b.name} alone", f"{b.name} only - neither"): b_alone,
        ("both together", "both - neither"): cells["both"] - cells["neither"],
        ("sum of single effects", f"({a.name} only - neither) + ({b.name} only - neither)"): a_alone + b_alone,
        ("interaction", f"(both - {b.name} only) - ({a.name} only - neither)"):
            cells["both"] - cells["b_only"] - cells["a_only"] + cells["neither"],
        ("both vs best single", f"both - {best_name}"): cells["both"] - cells[best_single],
    }
    return with_holm(pd.DataFrame([{"effect": name, "definition": definition, **paired_with_tost(diff, margin)}
                                   for (name, definition), diff in effects.items()]))


def anova_2x2(frame: pd.DataFrame, a: Factor, b: Factor, y: str = METRIC,
              block: str | None = "seed") -> tuple[pd.DataFrame, dict[str, float]]:
    """:func:`~dropout_lab.analysis.stats.two_way_anova` of ``y`` over the two factors (terms named by them)."""
    on = frame.assign(_a=frame[a.key] == a.on, _b=frame[b.key] == b.on)
    table, coefficient = two_way_anova(on, y, "_a", "_b", block=block)
    names = {"_a": a.name, "_b": b.name, "_a x _b": f"{a.name} x {b.name}"}
    return table.assign(term=table["term"].replace(names)), coefficient


def interaction_tests(effects: pd.DataFrame, anova: pd.DataFrame, coefficient: dict[str, float]) -> pd.DataFrame:
    """The interaction by three routes: per-seed paired t-test, OLS coefficient, repeated-measures F."""
    per_seed = effects.set_index("effect").loc["interaction"]
    row = anova.iloc[2]
    out = [{"method": "per-seed interaction, paired t-test", "estimate": per_seed["mean_diff"],
            "statistic": f"t = {per_seed['t']:.3f}", "df": per_seed["n_pairs"] - 1, "p_value": per_seed["p_value"]},
           {"method": "OLS coefficient (seed block, pooled error), t-test", "estimate": coefficient["estimate"],
            "statistic": f"t = {coefficient['t']:.3f}", "df": coefficient["df"], "p_value": coefficient["p_value"]}]
    if "F_rm" in anova and pd.notna(row.get("F_rm")):
        out.append({"method": "ANOVA F, error = interaction x seed", "estimate": coefficient["estimate"],
                    "statistic": f"F = {row['F_rm']:.3f}", "df": row["df_rm_error"], "p_value": row["p_rm"]})
    return pd.DataFrame(out)


def verdict(effects: pd.DataFrame) -> str:
    """'additive' (TOST: interaction equivalent to 0 within the margin), 'diminishing', 'cancelling' or
    'synergistic' (its 95% CI excludes 0), else 'inconclusive' (neither): from the interaction and both-vs-best."""
    rows = effects.set_index("effect")
    interaction, versus_best = rows.loc["interaction"], rows.loc["both vs best single"]
    if pd.isna(interaction["ci_low"]):
        return "undecided"
    direction = excludes_zero(interaction)
    if direction > 0:
        return "synergistic"
    if direction < 0:
        return "diminishing" if excludes_zero(versus_best) > 0 else "cancelling"
    return "additive" if bool(interaction["equivalent"]) else "inconclusive"


REASONS = {
    "synergistic": "its 95% CI lies above 0: together they do better than the sum of the single effects",
    "diminishing": "its 95% CI lies below 0, yet the combination still beats the best single one",
    "cancelling": "its 95% CI lies below 0 and the combination is no better than the best single one",
    "undecided": "it cannot be estimated with fewer than two seeds having all four cells",
}


def reason(word: str, interaction: pd.Series, margin: float) -> str:
    """Why the verdict is ``word``: additivity and inconclusiveness are the interaction's TOST."""
    if word == "additive":
        return (f"it is {equivalence_text(tost_of(interaction), margin)}, so the effects add up within the "
                "smallest effect of interest")
    if word == "inconclusive":
        return (f"its 95% CI contains 0 but it is {equivalence_text(tost_of(interaction), margin)}, so neither "
                "additivity nor an interaction is shown")
    return REASONS[word]


def verdict_sentence(effects: pd.DataFrame, a: Factor, b: Factor, margin: float) -> str:
    """The study's answer, every number taken from the effects table."""
    rows = effects.set_index("effect")
    word = verdict(effects)
    both, total = rows.loc["both together"], rows.loc["sum of single effects"]
    alone_a, alone_b = rows.loc[f"{a.name} alone"], rows.loc[f"{b.name} alone"]
    versus = rows.loc["both vs best single"]
    head = (f"are {word}" if word != "inconclusive"
            else "are not shown to be additive or interacting (inconclusive at this budget)")
    return (f"The effects of {a.name} and {b.name} on test accuracy {head}: together they change it by "
            f"{100 * both['mean_diff']:+.2f} pp ({ci_text(both['ci_low'], both['ci_high'])}) against "
            f"{100 * total['mean_diff']:+.2f} pp for the sum of the single effects ({a.name} alone "
            f"{100 * alone_a['mean_diff']:+.2f} pp, {b.name} alone {100 * alone_b['mean_diff']:+.2f} pp); the "
            f"interaction is {describe_test(rows.loc['interaction'])}: {reason(word, rows.loc['interaction'], margin)} "
            f"({versus['definition']}: {100 * versus['mean_diff']:+.2f} pp, "
            f"{ci_text(versus['ci_low'], versus['ci_high'])}).")


def seed_sentence(cells: pd.DataFrame, a: Factor, b: Factor, margin: float) -> str | None:
    """Names any seed whose omission alone changes the verdict (None when none does)."""
    def word(c: pd.DataFrame) -> str:
        return verdict(effects_table(c, a, b, margin))

    return seed_flip_text(seed_flips(cells, word), word(cells))


def interaction_plot(runs: pd.DataFrame, a: Factor, b: Factor, metric: str = METRIC) -> MplFigure:
    """Mean test accuracy per cell: x = factor b, hue = factor a, 95% t-interval bars, seeds as dots."""
    frame = runs.assign(x=[b.level_name(v) for v in runs[b.key]], hue=[a.level_name(v) for v in runs[a.key]])
    order, hue_order = [b.level_name(b.off), b.level_name(b.on)], [a.level_name(a.off), a.level_name(a.on)]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sns.stripplot(data=frame, x="x", y=metric, hue="hue", order=order, hue_order=hue_order, dodge=True,
                  alpha=0.35, legend=False, ax=ax)
    sns.pointplot(data=frame, x="x", y=metric, hue="hue", order=order, hue_order=hue_order, dodge=0.4,
                  errorbar=t_interval, capsize=0.08, markers=["o", "s"], linestyles=["-", "--"], ax=ax)
    ax.set_xlabel(b.name)
    ax.set_ylabel("test accuracy" + (" (best-validation epoch)" if metric == BEST_METRIC else ""))
    ax.legend(title=a.name)
    ax.set_title("Interaction plot: parallel lines = additive effects")
    fig.tight_layout()
    return fig


def analyze(data: StudyData) -> Report:
    """Main effects, interaction (per seed and by two-way ANOVA), interaction plot and the verdict."""
    report = Report()
    factors = find_factors(data) if not data.runs.empty else None
    if factors is None:
        report.notes.append("factorial needs finished runs on exactly two grid keys with two levels each.")
        return report
    a, b = factors
    metric = primary_metric(data)
    runs = data.runs.dropna(subset=[metric])
    cells = cell_table(runs, a, b, metric)
    if cells.empty:
        report.notes.append("No seed has finished runs in all four cells yet.")
        return report
    margin = interaction_margin(data)
    effects = effects_table(cells, a, b, margin)
    paired_runs = runs[runs["seed"].isin(cells.index)]
    anova, coefficient = anova_2x2(paired_runs, a, b, y=metric)
    report.conclusions.append(verdict_sentence(effects, a, b, margin))
    if flip := seed_sentence(cells, a, b, margin):
        report.conclusions.append(flip)
    for name in (f"main effect of {a.name}", f"main effect of {b.name}"):
        row = effects.set_index("effect").loc[name]
        report.conclusions.append(f"{name[0].upper() + name[1:]} on test accuracy: {describe_test(row, 'p_holm')}.")
    interaction = anova.iloc[2]
    per_seed = effects.set_index("effect").loc["interaction", "mean_diff"]
    report.conclusions.append(
        f"Two-way ANOVA with seed as block (OLS): interaction F({int(interaction['df'])}, {int(anova.iloc[-1]['df'])})"
        f" = {interaction['F']:.2f}, p = {interaction['p_value']:.3g}; interaction coefficient "
        f"{100 * coefficient['estimate']:+.2f} pp (t = {coefficient['t']:.2f}), "
        + ("equal to" if np.isclose(coefficient["estimate"], per_seed) else "unlike")
        + f" the per-seed mean interaction ({100 * per_seed:+.2f} pp).")
    summary = summarize_over_seeds(runs, [a.key, b.key], METRIC)
    if metric == BEST_METRIC or (BEST_METRIC in runs and runs[BEST_METRIC].notna().any()):
        best = runs.groupby([a.key, b.key])[BEST_METRIC].mean().rename("mean_best_test_acc").reset_index()
        summary = summary.merge(best, on=[a.key, b.key], how="left")
    report.tables.append(Table("cells", summary, "Test accuracy per cell over seeds (last epoch: mean, std, n, 95% "
                                                 "t-interval; best-validation-epoch mean where stored)"))
    report.tables.append(Table("effects", effects, f"Effects on `{metric}`, paired on seeds (paired t-test, "
                                                   "95% CI, Cohen's d_z, Holm across the rows)"))
    report.tables.append(Table("anova", anova, "Two-way ANOVA with interaction and seed as block (statsmodels "
                                               "OLS, Type III SS); F_rm/p_rm: each term against its term x seed error"))
    report.tables.append(Table("interaction_tests", interaction_tests(effects, anova, coefficient),
                               "The interaction tested three ways"))
    report.figures.append(Figure("interaction_plot", interaction_plot(runs, a, b, metric),
                                 f"Interaction plot: mean `{metric}` per cell with 95% t-interval bars"))
    report.notes.append("The verdict uses the unadjusted 95% CIs of the pre-specified interaction and of 'both vs "
                        "best single' and the interaction's TOST (additive: the interaction is equivalent to 0 within "
                        f"±{100 * margin:g} pp, {MARGIN_SOURCE if data.spec.plan else 'the study margin'}; "
                        "inconclusive: its CI contains "
                        "0 but TOST does not say equivalent; diminishing: below 0 but both beats the best single "
                        "factor; cancelling: below 0 and both no better than the best single factor; synergistic: "
                        "above 0). p_holm corrects across all rows of the effects table.")
    report.notes.append(SELECTION_NOTE if metric == METRIC else
                        f"Selection: the effects, the interaction, the ANOVA and the figure read `{metric}`, the "
                        "declared plan's primary metric; the cells table gives both epochs.")
    report.notes.append(f"Levels: {a.name} off = {a.off!r}, on = {a.on!r}; {b.name} off = {b.off!r}, on = {b.on!r} "
                        "(each grid key's first value is 'off'). Only seeds with all four cells are paired.")
    return report
