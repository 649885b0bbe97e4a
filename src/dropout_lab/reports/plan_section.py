"""A planned study's report opening: its declared analysis plan, the verdicts that plan gives, its figure and the
labelled sensitivity readings, computed from the spec and the stored runs by :mod:`dropout_lab.analysis.plan_verdicts`.

Only these verdicts answer a planned study; the study kind's own analysis is printed after them as exploratory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from dropout_lab.analysis.plan_verdicts import (
    ABOVE,
    BELOW,
    CONSISTENT,
    EQUIVALENT,
    HIGHER,
    LOWER,
    UNDECIDED,
    VERDICT_COLUMNS,
    plan_looks,
    plan_table,
    plan_verdicts,
    reference_claims,
)
from dropout_lab.analysis.sequential import SEEDS_CAP
from dropout_lab.config.analysis_plan import PRIMARY_METRICS, AnalysisPlan, Comparison, Reference
from dropout_lab.config.study_spec import StudySpec
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.labels import value_text
from dropout_lab.reports.report_parts import Figure, PlanSection, Table
from dropout_lab.reports.wording import percentile_text

#: A decided comparison's verdict (the others are ``UNDECIDED``).
DECIDED = (HIGHER, LOWER, EQUIVALENT)
#: The figure of a planned study: each comparison's confidence sequence over the number of seeds.
FIGURE_NAME = "plan_confidence_sequences"
#: The verdict table's columns shown in the README (its CSV has all; the margins' reasons are in the plan above).
SHOWN = ["comparison", "family", "margin", "n_pairs", "mean_diff", "cs_low", "cs_high", "p_difference_adj",
         "p_equivalence_adj", "verdict"]
#: Where a printed reference lies against the prediction interval, by its verdict.
SIDES = {CONSISTENT: "inside", ABOVE: "above", BELOW: "below"}
#: The reference table's caption (its confidence filled in).
REFERENCES_CAPTION = ("References of the declared plan: a printed run (interval `one run`) against the {0}% prediction "
                      "interval for one run of this protocol, without test-set error (the printed run was scored on "
                      "the same test set), and `percentile`, where it falls among single runs; a goal (interval "
                      "`mean`) against the interval of the mean, the test set's sampling error included")
#: Facets per row of the figure.
FACETS_PER_ROW = 4


# ---------------------------------------------------------------- the plan as declared

def cell_text(cell: Mapping[str, Any]) -> str:
    """A plan's cell in words, e.g. 'model.dropout_1=0.3, model.dropout_2=0.5'."""
    return ", ".join(value_text(k, v) for k, v in cell.items())


def in_pp(metric: str | None) -> bool:
    """Whether a comparison's ``metric`` is an accuracy, worded in percentage points (the primary metric is);
    any other instrument column (NLL, ECE, a variance) is worded in its own units."""
    return metric is None or metric.rsplit(".", 1)[-1] in ("accuracy", "acc") or metric.endswith("_acc")


def _amount(value: float, pp: bool, signed: bool = False) -> str:
    if pp:
        return f"{100 * value:+.2f} pp" if signed else f"{100 * value:.2f}"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _margin_text(margin: float, pp: bool = True) -> str:
    return f"±{100 * margin:g} pp" if pp else f"±{margin:g}"


def _comparison_pp(plan: AnalysisPlan, name: str) -> bool:
    return in_pp(next((c.metric for c in plan.comparisons if c.name == name), None))


def seed_order(spec: StudySpec) -> list[int]:
    """The order seeds enter the analysis: the design's seeds up to its max, else the fixed list."""
    return spec.design.seeds(spec.design.max) if spec.design else list(spec.seed_list)


def declared_looks(spec: StudySpec) -> list[int]:
    """The numbers of seeds at which the plan is evaluated: the design's looks, else the fixed list's length."""
    return spec.design.looks() if spec.design else [len(spec.seed_list)]


def _comparison_line(c: Comparison) -> str:
    metric = f"; metric `{c.metric}` instead of the primary" if c.metric else ""
    margin = _margin_text(c.margin, in_pp(c.metric))
    cells = f"{cell_text(c.treatment)} vs {cell_text(c.control)}"
    if c.minus is not None:
        cells = f"({cells}) minus ({cell_text(c.minus.treatment)} vs {cell_text(c.minus.control)})"
    return f"  - **{c.name}**: {cells}; margin {margin} ({c.why}){metric}"


def _reference_line(r: Reference, alpha: float) -> str:
    kind = ("a goal: met when the whole interval of the mean, the test set's sampling error included, lies above it"
            if r.goal else f"a printed run: consistent when it lies inside the {_confidence(alpha)}% prediction "
                           "interval for one run of this protocol")
    return f"- **{r.name}**: the runs of {cell_text(r.cell)} against {r.value:g}, {kind} ({r.why})"


def _confidence(alpha: float) -> str:
    return f"{100 * (1 - alpha):g}"


def plan_lines(spec: StudySpec, plan: AnalysisPlan) -> list[str]:
    """The declared plan as report lines, every item read from the spec."""
    primary = PRIMARY_METRICS[plan.primary]
    order = seed_order(spec)
    if spec.design:
        d = spec.design
        seeds = (f"sequential: seeds {order[0]}, {order[0] + 1}, ... taken {d.batch} at a time from {d.min} to at "
                 f"most {d.max}; the plan is read at n = {', '.join(map(str, d.looks()))} seeds, and the study "
                 "stops at the first look where every comparison is decided (a decided comparison stays decided)")
    else:
        seeds = f"a fixed list of {len(order)} seeds {order}, read once at n = {len(order)}"
    lines = [f"- primary metric: `{plan.primary}`, the {primary[2]} (run table column `{primary[0]}`)",
             f"- alpha: {plan.alpha:g}; intervals are two-sided anytime-valid {100 * (1 - plan.alpha):g}% confidence "
             "sequences (valid at every look), paired on seeds",
             f"- correction: {plan.correction}, within each family, for the difference and equivalence tests alike",
             f"- seeds: {seeds}"]
    for family, comparisons in plan.families().items():
        lines += [f"- family `{family}` ({len(comparisons)} comparison{'s' if len(comparisons) != 1 else ''}, "
                  "treatment vs control):", *map(_comparison_line, comparisons)]
    if plan.dropped:
        lines.append(f"- left out, because the grid was narrowed on the command line and no longer holds their cells: "
                     f"{', '.join(plan.dropped)}")
    if plan.references:
        lines += ["", "References (absolute claims: a printed run against the prediction interval for one run, whose "
                  "test set ours shares; a goal against the interval of the mean, which includes the test set's own "
                  "sampling error):", "", *[_reference_line(r, plan.alpha) for r in plan.references]]
    if plan.sensitivity:
        lines += ["", "Sensitivity readings (reported beside the verdicts, never as verdicts):", "",
                  *[f"- `{name}`: the {PRIMARY_METRICS[name][2]} (column `{PRIMARY_METRICS[name][0]}`)"
                    for name in plan.sensitivity]]
    return lines


# ---------------------------------------------------------------- what the stored runs allow

def stored_seeds(runs: pd.DataFrame, keys: Sequence[str], order: Sequence[int]) -> int:
    """How many seeds of ``order``, from the first, every configuration of ``runs`` has finished."""
    if runs.empty or "seed" not in runs:
        return 0
    cells = runs.groupby(list(keys), dropna=False) if keys else [(None, runs)]
    have = set.intersection(*(set(group["seed"]) for _, group in cells))
    n = 0
    while n < len(order) and order[n] in have:
        n += 1
    return n


def _ci(low: float, high: float, confidence: float, pp: bool = True) -> str:
    return f"{confidence:g}% CS [{_amount(low, pp)}, {_amount(high, pp)}]" + (" pp" if pp else "")


def verdict_sentence(row: pd.Series, plan: AnalysisPlan, spec: StudySpec, n: int) -> str:
    """One comparison's verdict in words, from its :func:`plan_verdicts` row at the look with ``n`` seeds."""
    confidence = 100 * (1 - plan.alpha)
    pp = _comparison_pp(plan, row["comparison"])
    adjusted = (f"{plan.correction}-adjusted p = {row['p_difference_adj']:.3g} for a difference, "
                f"{row['p_equivalence_adj']:.3g} for equivalence within {_margin_text(row['margin'], pp)}")
    text = (f"{row['comparison']}: {_amount(row['mean_diff'], pp, signed=True)} "
            f"({_ci(row['cs_low'], row['cs_high'], confidence, pp)}"
            f" over {int(row['n_pairs'])} paired seeds; {adjusted}): ")
    if row["verdict"] in DECIDED:
        return text + f"**{row['verdict']}**, decided at the look with {int(row['seeds_taken'])} seeds."
    if bool(row["max_hit"]):
        needed = row["seeds_needed"]
        more = (f"; a decision would need about {int(np.ceil(needed))} seeds" if pd.notna(needed)
                else "; no estimate of the seeds a decision would need")
        return text + f"**undecided at max seeds** ({n}){more}."
    later = " so far (more looks are declared)" if spec.design and n < spec.design.max else ""
    needed = (f"; a decision would need about {int(np.ceil(row['seeds_needed']))} seeds"
              if pd.notna(row["seeds_needed"]) else "")
    return text + f"**{UNDECIDED}** with {n} seeds{later}{needed}."


def _printed_subject(row: pd.Series) -> str:
    """A printed reference as a sentence's subject: its name, with its value unless the name already says it."""
    value = f"{row['value']:g}"
    return row["name"] if value in row["name"] else f"{row['name']} ({value})"


def reference_sentence(row: pd.Series, reference: Reference, alpha: float) -> str:
    """One reference claim in words, from its :func:`reference_claims` row."""
    if reference.goal:
        note = f" ({text})" if (text := _goal_note(row)) else ""
        return (f"{row['name']}: mean {row['mean']:.4f} over {int(row['n'])} seeds, interval [{row['low']:.4f}, "
                f"{row['high']:.4f}] (the seeds' spread and the test set's sampling error) against {row['value']:g}: "
                f"goal **{row['verdict']}**{note}.")
    subject = _printed_subject(row)
    if row["verdict"] == UNDECIDED:
        return (f"{subject}: **{UNDECIDED}**, {int(row['n'])} seed(s) give no prediction interval for one run "
                "(it needs two).")
    return (f"{subject} lies **{SIDES[row['verdict']]}** the {_confidence(alpha)}% prediction interval "
            f"[{row['low']:.4f}, {row['high']:.4f}] for one run of this protocol ({int(row['n'])} seeds, mean "
            f"{row['mean']:.4f}, sd {row['sd']:.4f}; {percentile_text(row['percentile'])}): **{row['verdict']}**.")


def answer_text(verdicts: pd.DataFrame, claims: pd.DataFrame, plan: AnalysisPlan) -> str:
    """The study's answer for its report and the index: how many comparisons are decided, each verdict, and each
    reference's verdict (a goal's: met, not met or undecided; a printed run's: where it lies against the
    prediction interval for one run)."""
    parts = [f"{r['comparison']} {r['verdict']}" + _undecided_note(r) for _, r in verdicts.iterrows()]
    decided = int(verdicts["verdict"].isin(DECIDED).sum())
    text = f"{decided} of {len(verdicts)} comparisons decided: " + "; ".join(parts) + "." if len(verdicts) else ""
    if not claims.empty:
        words = [_claim_summary(r, plan.alpha) for _, r in claims.iterrows()]
        text += (" " if text else "") + "References: " + "; ".join(words) + "."
    return text


def _undecided_note(row: pd.Series) -> str:
    """For an undecided comparison of the answer: whether the design's max was reached, and the seeds a decision
    would need (empty for a decided one)."""
    if row["verdict"] != UNDECIDED:
        return ""
    needed = row["seeds_needed"]
    more = f"; a decision would need about {int(np.ceil(needed))} seeds" if pd.notna(needed) else ""
    n = int(row["n_pairs"])
    return f" (at max seeds, {n}{more})" if bool(row["max_hit"]) else f" ({n} seeds so far{more})"


def _goal_note(row: pd.Series) -> str:
    """For an undecided goal: whether the design's max was reached, and the seeds a decision would need, or why no
    number of seeds would decide it (empty for a decided goal); the callers put it in brackets."""
    if row["verdict"] != UNDECIDED or pd.isna(row["mean"]):
        return ""
    where = f"at max seeds, {int(row['n'])}" if bool(row["max_hit"]) else f"{int(row['n'])} seeds so far"
    if pd.notna(row["seeds_needed"]):
        return f"{where}; a decision would need about {int(row['seeds_needed'])} seeds"
    if abs(row["mean"] - row["value"]) <= row["test_error"]:
        return (f"{where}; no number of seeds would decide it: the test set's own sampling error alone, "
                f"±{100 * row['test_error']:.2f} pp, reaches {row['value']:g}, and only a larger test set could")
    return f"{where}; a decision would need more than {SEEDS_CAP:,} seeds"


def _claim_summary(row: pd.Series, alpha: float) -> str:
    if bool(row["goal"]):
        note = f"; {text}" if (text := _goal_note(row)) else ""
        return (f"{row['name']}: goal {row['verdict']} (mean {row['mean']:.4f}, interval "
                f"[{row['low']:.4f}, {row['high']:.4f}] over {int(row['n'])} seeds{note})")
    if row["verdict"] == UNDECIDED:
        return f"{row['name']}: {UNDECIDED} (fewer than two seeds)"
    return (f"{_printed_subject(row)} lies {SIDES[row['verdict']]} the {_confidence(alpha)}% prediction interval "
            f"for one run [{row['low']:.4f}, {row['high']:.4f}] ({row['verdict']})")


def confidence_figure(looks: pd.DataFrame, plan: AnalysisPlan, declared: Sequence[int]) -> MplFigure:
    """Each comparison's confidence sequence (and estimate) against the number of seeds, with zero, the +-margin
    band and the ``declared`` looks (dotted), one facet per comparison."""
    names = list(dict.fromkeys(looks["comparison"]))
    columns = min(len(names), FACETS_PER_ROW)
    rows_ = -(-len(names) // columns)
    fig, axes = plt.subplots(rows_, columns, figsize=(4 * columns, 3.4 * rows_), squeeze=False)
    for ax, name in zip(axes.flat, names):
        rows = looks[looks["comparison"] == name].sort_values("n")
        scale = 100 if _comparison_pp(plan, name) else 1
        margin = scale * float(rows["margin"].iloc[0])
        unit = " pp" if scale == 100 else ""
        ax.axhspan(-margin, margin, color="tab:green", alpha=0.15, label=f"±margin ({margin:g}{unit})")
        ax.axhline(0, color="black", linewidth=0.8)
        for n in declared:
            if rows["n"].min() <= n <= rows["n"].max():
                ax.axvline(n, color="grey", linestyle=":", linewidth=0.8)
        ax.fill_between(rows["n"], scale * rows["cs_low"], scale * rows["cs_high"], alpha=0.3,
                        label=f"{100 * (1 - plan.alpha):g}% confidence sequence")
        ax.plot(rows["n"], scale * rows["mean_diff"], marker=".", label="mean difference")
        ax.set_title(name, fontsize="medium")
        ax.set_ylabel(f"treatment - control{' (pp)' if scale == 100 else ''}")
        ax.set_xlabel("seeds")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- sensitivity

def sensitivity(table: pd.DataFrame, plan: AnalysisPlan, spec: StudySpec, looks: Sequence[int],
                order: Sequence[int], verdicts: pd.DataFrame) -> tuple[list[Table], list[str]]:
    """Each declared sensitivity reading's verdicts by the same procedure, and a sentence per disagreement."""
    tables, lines = [], []
    planned = verdicts.set_index("comparison")["verdict"]
    for name in plan.sensitivity:
        column, _, description = PRIMARY_METRICS[name]
        if column == plan.test_column:
            continue  # the primary itself
        if column not in table or table[column].isna().all():
            lines.append(f"Sensitivity `{name}`: no stored run has `{column}`; not computed.")
            continue
        reading = plan_verdicts(plan_looks(table, plan, looks, order, metric=column), plan, spec.design)
        reading = reading.assign(plan_verdict=reading["comparison"].map(planned))
        tables.append(Table(f"sensitivity_{name}", reading, f"Sensitivity: {description}",
                            shown=[*SHOWN, "plan_verdict"]))
        for _, row in reading[reading["verdict"] != reading["plan_verdict"]].iterrows():
            pp = _comparison_pp(plan, row["comparison"])
            lines.append(f"{row['comparison']}: on the {description}, {_amount(row['mean_diff'], pp, signed=True)} "
                         f"({_ci(row['cs_low'], row['cs_high'], 100 * (1 - plan.alpha), pp)}) reads "
                         f"“{row['verdict']}”, which disagrees with the verdict of the declared plan "
                         f"(“{row['plan_verdict']}”).")
    if tables and not any("disagrees" in line for line in lines):
        lines.append("Every sensitivity reading agrees with the declared plan's verdicts.")
    return tables, lines


# ---------------------------------------------------------------- the section

def stored_looks(data: StudyData) -> tuple[int, list[int]]:
    """How many seeds of the plan's order every configuration has finished, and the looks the plan is read at:
    a design's looks its stored seeds reach; a fixed list's one look, whatever has finished."""
    stored = stored_seeds(data.runs, data.keys, seed_order(data.spec))
    looks = declared_looks(data.spec)
    return stored, [n for n in looks if n <= stored] if data.spec.design else looks


def declared_verdicts(data: StudyData) -> pd.DataFrame:
    """The declared plan's verdicts (:func:`plan_verdicts`) at the last look the stored runs reach, as the report's
    verdict section gives them; empty without a plan, a comparison or a look (for an analysis that may speak of a
    question only through its declared verdict)."""
    plan = data.spec.plan
    _, looks = stored_looks(data)
    if plan is None or not plan.comparisons or not looks or data.runs.empty:
        return pd.DataFrame(columns=list(VERDICT_COLUMNS))
    table = plan_table(data.runs, data.instruments)
    return plan_verdicts(plan_looks(table, plan, looks, seed_order(data.spec)), plan, data.spec.design)


def plan_section(data: StudyData) -> PlanSection | None:
    """The plan, its verdicts, figure and sensitivity readings for a study with a plan (None without one)."""
    spec, plan = data.spec, data.spec.plan
    if plan is None:
        return None
    order = seed_order(spec)
    stored, looks = stored_looks(data)
    section = PlanSection(plan_lines(spec, plan), answer="", declared=len(plan.comparisons))
    if not plan.comparisons and not plan.references:
        section.gives_verdicts = False
        section.answer = ("This plan declares its primary metric only (a tuning study optimises its validation "
                          "counterpart): it has no comparisons or references, so it gives no verdicts.")
        return section
    if not looks or data.runs.empty:
        first = declared_looks(spec)[0]
        section.answer = (f"No look of the declared plan yet: {stored} of the {first} seeds of the first look "
                          "have finished runs in every configuration; nothing is decided.")
        return section
    table = plan_table(data.runs, data.instruments)  # instrument rows for comparisons that read an instrument
    verdicts = declared_verdicts(data)
    claims = reference_claims(table, plan, design=spec.design) if plan.references else pd.DataFrame()
    section.decided = int(verdicts["verdict"].isin(DECIDED).sum())
    section.answer = answer_text(verdicts, claims, plan)
    section.tables.append(Table("plan_verdicts", verdicts,
                                f"Verdicts of the declared plan at n = {looks[-1]} seeds (differences as "
                                f"proportions; {plan.correction}-adjusted p within each family)",
                                shown=[*SHOWN, "seeds_taken", "max_hit", "seeds_needed"]))
    section.verdict_lines = [verdict_sentence(row, plan, spec, looks[-1]) for _, row in verdicts.iterrows()]
    if not claims.empty:
        section.tables.append(Table("plan_references", claims, REFERENCES_CAPTION.format(_confidence(plan.alpha)),
                                    shown=[c for c in claims.columns if c != "why"]))
        by_name = {r.name: r for r in plan.references}
        section.reference_lines = [reference_sentence(row, by_name[row["name"]], plan.alpha)
                                   for _, row in claims.iterrows()]
    start = looks[0] if spec.design else 2  # a fixed list has one look; its sequence is valid from two seeds
    if not verdicts.empty and stored >= start:
        every = plan_looks(table, plan, range(start, stored + 1), order)
        section.figures.append(Figure(FIGURE_NAME, confidence_figure(every, plan, declared_looks(spec)),
                                      f"Each declared comparison's {100 * (1 - plan.alpha):g}% anytime-valid "
                                      f"confidence sequence (band) and estimate over the first {start} to {stored} "
                                      "seeds, with zero (black), the ±margin band (green) and the declared looks "
                                      "(dotted); drawn at every n, while the verdicts read the declared looks only"))
    section.sensitivity_tables, section.sensitivity_lines = sensitivity(table, plan, spec, looks, order, verdicts)
    return section
