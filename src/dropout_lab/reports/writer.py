"""Write a study's report folder (README.md, CSV tables, PNG figures, the tidy run table, answer.json) and the index."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from dropout_lab.config.engine import engine_precision
from dropout_lab.config.study_grid import grid_cells
from dropout_lab.config.study_spec import StudySpec
from dropout_lab.reports.compute import compute_text, compute_totals, runs_text, sum_totals
from dropout_lab.reports.report_parts import Figure, PlanSection, Report, Table

#: Where ``study report`` writes by default: ``reports/`` under the current folder.
REPORTS_DIR = Path("reports")
#: Each report folder's machine-readable summary (study, question, answer, key figure, compute, tuning or not).
ANSWER_FILE = "answer.json"


#: The longest table shown whole in a README; longer ones show an excerpt of about ``EXCERPT_ROWS`` rows.
MAX_ROWS, EXCERPT_ROWS = 15, 10
#: Significant digits of the floats in the shipped per-seed tidy tables (curves, instruments).
TIDY_DIGITS = 6
#: Said of a sequential study's exploratory analyses: their fixed-n tests ignore the stopping rule.
SEQUENTIAL_CAVEAT = (" Their p-values and intervals are fixed-n ones (t-tests, TOST), computed after seeds were "
                     "added until the plan decided: they ignore that stopping rule, so they overstate certainty; "
                     "where one disagrees with a verdict of the plan, the verdict holds.")


def _markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".4g")


def excerpt(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``frame`` itself when it has at most MAX_ROWS rows, else every k-th row (about EXCERPT_ROWS, ending with the
    last row); returns the rows to show and k (1: the whole table)."""
    if len(frame) <= MAX_ROWS:
        return frame, 1
    step = -(-len(frame) // EXCERPT_ROWS)
    return frame.iloc[len(frame) - 1::-step].iloc[::-1], step


def rounded(frame: pd.DataFrame, digits: int = TIDY_DIGITS) -> pd.DataFrame:
    """``frame`` with its float columns rounded to ``digits`` significant digits (small, still exact enough)."""
    out = frame.copy()
    for column in out.select_dtypes(include="float").columns:
        out[column] = [float(f"{v:.{digits}g}") if pd.notna(v) else v for v in out[column]]
    return out


def write_tidy(tables: Mapping[str, pd.DataFrame], out_dir: Path) -> list[str]:
    """Write each non-empty per-seed tidy table as ``NAME.csv`` (floats to 6 significant digits); their names."""
    written = []
    for name, frame in tables.items():
        if frame is not None and not frame.empty:
            rounded(frame).to_csv(out_dir / f"{name}.csv", index=False)
            written.append(name)
    return written


def save_figures(figures: Sequence[Figure], out_dir: Path) -> None:
    """Write each figure as ``NAME.png`` and close it; a failed save still closes every figure."""
    try:
        for figure in figures:
            figure.figure.savefig(out_dir / f"{figure.name}.png", dpi=110)
            plt.close(figure.figure)
    finally:
        for figure in figures:
            plt.close(figure.figure)  # those left unsaved by a failure (closing twice is harmless)


def design_lines(spec: StudySpec, runs: pd.DataFrame) -> list[str]:
    """The study's design as report bullet points, with what actually ran."""
    lines = [f"- overlay: `experiment={spec.experiment}`" if spec.experiment else "- overlay: per grid cell"]
    if spec.overrides:
        lines.append("- fixed overrides: " + ", ".join(f"`{o}`" for o in spec.overrides))
    if spec.design:  # the seeds that ran are the stored ones; the plan section says how they were added
        d, stored = spec.design, runs["seed"].nunique() if "seed" in runs else 0
        lines.append(f"- epochs per run: {spec.epochs}; seeds: sequential from seed {d.first}, {d.min} to {d.max} "
                     f"in batches of {d.batch} ({stored} distinct seeds stored)")
    else:
        lines.append(f"- epochs per run: {spec.epochs}; seeds: {spec.seed_list}")
    if spec.grid:
        cells = len(grid_cells(spec)) // len(spec.seed_list)
        lines.append("- grid: " + "; ".join(f"`{k}` in {list(v)}" for k, v in spec.grid.items())
                     + (f" ({cells} configurations)" if spec.design else
                        f" ({cells} configurations x {len(spec.seed_list)} seeds)"))
    if spec.search_space:
        lines.append(f"- tuned: {', '.join(spec.search_space)} with {spec.sampler}, {spec.n_trials} trials, "
                     f"pruner {spec.pruner}")
    totals = compute_totals(runs)
    retried = int((runs["attempts"] - 1).sum()) if "attempts" in runs else 0
    lines.append(f"- runs: {runs_text(totals)} trained; attempts lost to a dead worker and re-run: {retried}")
    lines.append(f"- training compute: {compute_text(totals)}")
    lines += engine_lines(runs)
    lines.append("- selection metric: validation split held out of the training images; final numbers: test set. "
                 "Each run records its last epoch (`test_acc`) and its best-validation epoch (`best_epoch`, "
                 "`best_test_acc`: early stopping's choice); the tables say which they use")
    return lines


def engine_lines(runs: pd.DataFrame) -> list[str]:
    """The engines of the stored runs, then their engines and precisions, flagged when there is more than one
    (arms trained differently differ by the engines' numerics too); none without an ``engine`` column."""
    if "engine" not in runs or not runs["engine"].notna().any():
        return []
    def plural(count: int) -> str:
        return f"{count} run{'s' if count != 1 else ''}"

    engines = runs["engine"].value_counts()
    kinds = runs["engine"].dropna().map(lambda name: "{}, {}".format(*engine_precision(name))).value_counts()
    found = "; ".join(f"{kind} ({plural(count)})" for kind, count in kinds.items())
    return ["- engine: " + ", ".join(f"`{name}` ({plural(count)})" for name, count in engines.items())
            + " (`per-run`: one run per process at a time; `population(K=..., precision)`: K runs fused"
              " into one stacked network, see the README's Populations section)",
            f"- engines and precisions: {found}" if len(kinds) == 1 else
            f"- **engines and precisions: {len(kinds)} found**: {found}. Runs trained on different engines or "
            "precisions differ by their numerics too; compare arms trained alike (`study run --population 1` "
            "trains every arm per-run)"]


def short_question(spec: StudySpec) -> str:
    """The question's first sentence, for the index."""
    return spec.question.split("? ")[0].rstrip("?") + "?"


def _figure_lines(path: str, caption: str) -> list[str]:
    return [f"![{caption}]({path})", "", f"*{caption}*", ""]


def write_answer(spec: StudySpec, runs: pd.DataFrame, report: Report, out_dir: Path,
                 plan: PlanSection | None = None) -> Path:
    """Write ``out_dir/answer.json``, the report's summary that the index is built from; a planned study's answer
    and key figure are its plan's (with ``plan``: comparisons declared and decided). ``compute`` is
    :func:`compute_totals` (``compute_min``: its run wall time in minutes); ``answer_note`` the report's
    selection-aware reading, where it has one."""
    key = plan.key_figure if plan else report.key_figure
    totals = compute_totals(runs)
    verdicts = plan if plan and plan.gives_verdicts else None
    summary: dict[str, object] = {
        "study": spec.name, "question": short_question(spec), "answer": verdicts.answer if verdicts else report.answer,
        "key_figure": f"{key.name}.png" if key else None, "key_figure_caption": key.caption if key else None,
        "compute_min": round(60 * totals["wall_h"], 3), "tuning": spec.is_tuning,
        "compute": {k: round(v, 4) if isinstance(v, float) else v for k, v in totals.items()}}
    if report.answer_note:
        summary["answer_note"] = report.answer_note
    if verdicts:
        summary["plan"] = {"declared": verdicts.declared, "decided": verdicts.decided}
    path = out_dir / ANSWER_FILE
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return path


def _table_lines(table: Table, out_dir: Path) -> list[str]:
    """Write the table's CSV; its caption, link and (excerpt of the) rows for the README."""
    table.frame.to_csv(out_dir / f"{table.name}.csv", index=False)
    shown, step = excerpt(table.frame if table.shown is None else table.frame[table.shown])
    link = f"[{table.name}.csv]({table.name}.csv)"
    note = (f" (excerpt: one row in {step} of its {len(table.frame)}; all rows in {link})" if step > 1
            else f" ({link})")
    return [f"**{table.caption}**{note}", "", _markdown(shown), ""]


def _bullets(lines: Sequence[str]) -> list[str]:
    return [*[f"- {line}" for line in lines], ""]


def plan_parts(plan: PlanSection, out_dir: Path) -> list[str]:
    """The README sections of a study's declared plan: the plan, its verdicts (answer, tables, sentences, figure)
    and its sensitivity readings."""
    parts = ["## Declared analysis plan", "", "Declared in the study file before the runs; only this plan gives "
             "verdicts.", "", *plan.plan_lines, "", "## Verdicts (declared plan)", "", plan.answer, ""]
    for i, table in enumerate(plan.tables):  # the verdicts first, with their sentences; then the references
        parts += [*_table_lines(table, out_dir), *(_bullets(plan.verdict_lines) if i == 0 else [])]
    if plan.reference_lines:
        parts += _bullets(plan.reference_lines)
    for figure in plan.figures:
        parts += _figure_lines(f"{figure.name}.png", figure.caption)
    if plan.sensitivity_tables or plan.sensitivity_lines:
        parts += ["## Sensitivity analyses", "", "The same comparisons read on another metric, by the same "
                  "procedure; labelled readings, not verdicts.", ""]
        for table in plan.sensitivity_tables:
            parts += _table_lines(table, out_dir)
        parts += _bullets(plan.sensitivity_lines)
    return parts


def write_report(spec: StudySpec, runs: pd.DataFrame, report: Report, out_dir: Path,
                 tidy: Mapping[str, pd.DataFrame] | None = None, plan: PlanSection | None = None) -> Path:
    """Write ``out_dir/README.md`` (question, answer with the key figure, design, results, conclusion), its
    files and ``answer.json``; returns the README path.

    ``tidy`` are per-seed tables shipped beside ``runs.csv`` (``curves``: per run per epoch; the instrument
    tables), so that every analysis can be re-derived from the report folder alone. With a ``plan`` (a study that
    declares one) the README opens with the plan, its verdicts and sensitivity readings, then the design, and the
    study kind's own ``report`` follows as exploratory analyses.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out_dir / "runs.csv", index=False)
    shipped = write_tidy(tidy or {}, out_dir)
    save_figures([*(plan.figures if plan else []), *report.figures], out_dir)
    parts = [f"# {spec.name}", "", f"**Question.** {spec.question}", ""]
    if plan:
        key = None
        parts += [*plan_parts(plan, out_dir), "## Design", "", *design_lines(spec, runs), "",
                  "## Exploratory analyses (not part of the declared plan)", "",
                  "The study kind's own tables, figures and findings. They were not declared before the runs: they "
                  "describe, they do not decide; the verdicts are those of the declared plan above."
                  + (SEQUENTIAL_CAVEAT if spec.design else ""), "", "### Results", ""]
    else:
        key = report.key_figure
        parts += ["## Answer", "", report.answer, "", *([report.answer_note, ""] if report.answer_note else []),
                  *(_figure_lines(f"{key.name}.png", key.caption) if key else []),
                  "## Design", "", *design_lines(spec, runs), "", "## Results", ""]
    for table in report.tables:
        parts += _table_lines(table, out_dir)
    for figure in report.figures:
        if figure is not key:
            parts += _figure_lines(f"{figure.name}.png", figure.caption)
    parts += ["### Exploratory findings (not verdicts)" if plan else "## Conclusion", "",
              *_bullets(report.conclusions)]
    if report.notes:
        parts += ["## Notes", "", *_bullets(report.notes)]
    parts += [f"*Generated by `dropout-lab study report {spec.name}` on {dt.date.today()} from the stored runs "
              f"(tidy tables: " + ", ".join(f"[{n}.csv]({n}.csv)" for n in ["runs", *shipped])
              + "). Every number and sentence above is computed from them.*", ""]
    write_answer(spec, runs, report, out_dir, plan)
    path = out_dir / "README.md"
    path.write_text("\n".join(parts))
    return path


def _compute(answer: Mapping[str, Any]) -> str:
    """A study's compute in the index: its CPU-hours, or an earlier answer's run wall time."""
    compute = answer.get("compute")
    if isinstance(compute, Mapping):
        return f"{compute['cpu_h']:.2f} CPU-hours"
    return f"{answer['compute_min']:.1f} min of run wall time (CPU-hours not recorded by its version)"


def compute_lines(answers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The index's compute section: per study (tuning included) its runs by state, epochs, run wall hours and
    CPU-hours, a total row and a sentence; answers written before these counts are named and left out of the sum."""
    counted = {name: a["compute"] for name, a in answers.items() if isinstance(a.get("compute"), Mapping)}
    older = [name for name in answers if name not in counted]
    if not counted:
        return [f"Compute not yet itemised: the answers of {', '.join(older)} were written by an earlier version; "
                "regenerate them.", ""] if older else []
    total = sum_totals(counted.values())
    rows = [[f"[{name}]({name}/README.md)", *[f"{c[k]:,}" for k in ("completed", "pruned", "failed", "epochs")],
             f"{c['wall_h']:.2f}", f"{c['cpu_h']:.2f}"] for name, c in counted.items()]
    rows.append(["**total**", *[f"{total[k]:,}" for k in ("completed", "pruned", "failed", "epochs")],
                 f"{total['wall_h']:.2f}", f"{total['cpu_h']:.2f}"])
    lines = ["## Compute", "", "| study | completed | pruned | failed | epochs | run wall time (h) | CPU-hours |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |", *["| " + " | ".join(row) + " |" for row in rows], "",
             f"Total training compute of these studies, the tuning studies included: {compute_text(total)}; "
             f"{runs_text(total)} trained. A run's wall time is its share of its worker's (a population member's: its "
             "share of the population's) on the machine that ran it; CPU-hours weigh it by the torch threads its "
             "worker used (`study run --jobs N` gives each worker cores / N threads); the hours of workers that ran "
             "side by side add up, so the elapsed time was shorter."]
    if older:
        lines[-1] += (" Left out (answers written by an earlier version, without these counts; regenerate them): "
                      + ", ".join(older) + ".")
    return [*lines, ""]


def write_index(reports_dir: Path) -> Path:
    """``reports_dir/README.md``, "Answers to the chapter's exercises", from the ``answer.json`` of every report
    folder: per study its question, answer (a planned study's: its plan's verdicts; then the report's
    selection-aware reading, where it has one), key figure and CPU-hours; the tuning studies as one table; the
    compute of every study and in total (:func:`compute_lines`).
    Folders written by an earlier version (no ``answer.json``) are listed at the end."""
    folders = sorted(p for p in reports_dir.iterdir() if (p / "README.md").is_file())
    answers = {p.name: json.loads((p / ANSWER_FILE).read_text()) for p in folders if (p / ANSWER_FILE).is_file()}
    older = [p.name for p in folders if p.name not in answers]
    tuning = {name: a for name, a in answers.items() if a["tuning"]}
    lines = ["# Answers to the chapter's exercises", "",
             "Each answer is computed from its study's stored runs by `dropout-lab study report NAME`; its full "
             "report holds the design, the tables, the figures and the per-seed data.", ""]
    for name, a in answers.items():
        if name not in tuning:
            said = f"**Declared plan:** {a['answer']}" if "plan" in a else a["answer"]
            if a.get("answer_note"):
                said += (f" **The report's selection-aware reading (not a verdict of the plan):** {a['answer_note']}"
                         if "plan" in a else f" {a['answer_note']}")
            lines += [f"## {name}", "", f"*{a['question']}*", "",
                      f"{said} [Full report]({name}/README.md) · compute: {_compute(a)}.", ""]
            if a["key_figure"]:
                lines += [f"![{a['key_figure_caption']}]({name}/{a['key_figure']})", ""]
    if tuning:
        rows = [[f"[{name}]({name}/README.md)", a["answer"].replace("|", r"\|"), _compute(a)]
                for name, a in tuning.items()]
        lines += ["## Tuning studies behind exercise 7", "", "| study | answer | compute |",
                  "| --- | --- | ---: |", *["| " + " | ".join(row) + " |" for row in rows], ""]
    lines += compute_lines(answers)
    if older:
        lines += ["Not yet regenerated (reports written by an earlier version, not summarised above): "
                  + ", ".join(f"[{name}]({name}/README.md)" for name in older) + ".", ""]
    path = reports_dir / "README.md"
    path.write_text("\n".join(lines))
    return path
