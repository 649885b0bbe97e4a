"""Write a study's report folder (README.md, CSV tables, PNG figures, the tidy run table, answer.json) and the index."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from dropout_lab.config.engine import engine_precision
from dropout_lab.config.study_grid import grid_cells
from dropout_lab.config.study_spec import StudySpec
from dropout_lab.reports.report_parts import Figure, Report

#: Where ``study report`` writes by default: ``reports/`` under the current folder.
REPORTS_DIR = Path("reports")
#: Each report folder's machine-readable summary (study, question, answer, key figure, compute, tuning or not).
ANSWER_FILE = "answer.json"


#: The longest table shown whole in a README; longer ones show an excerpt of about ``EXCERPT_ROWS`` rows.
MAX_ROWS, EXCERPT_ROWS = 15, 10
#: Significant digits of the floats in the shipped per-seed tidy tables (curves, instruments).
TIDY_DIGITS = 6


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
    lines.append(f"- epochs per run: {spec.epochs}; seeds: {spec.seed_list}")
    if spec.grid:
        cells = len(grid_cells(spec)) // len(spec.seed_list)
        lines.append("- grid: " + "; ".join(f"`{k}` in {list(v)}" for k, v in spec.grid.items())
                     + f" ({cells} configurations x {len(spec.seed_list)} seeds)")
    if spec.search_space:
        lines.append(f"- tuned: {', '.join(spec.search_space)} with {spec.sampler}, {spec.n_trials} trials, "
                     f"pruner {spec.pruner}")
    finished = runs[runs["state"] == "COMPLETE"] if "state" in runs else runs
    states = runs["state"].value_counts() if "state" in runs else pd.Series(dtype=int)
    retried = int((runs["attempts"] - 1).sum()) if "attempts" in runs else 0
    lines.append(f"- runs completed: {len(finished)}; pruned: {int(states.get('PRUNED', 0))}; failed: "
                 f"{int(states.get('FAIL', 0))}; attempts lost to a dead worker and re-run: {retried}; "
                 f"training wall time: {compute_minutes(runs):.1f} min on this machine")
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


def compute_minutes(runs: pd.DataFrame) -> float:
    """The runs' training wall time in minutes (0 without a ``wall_time_s`` column)."""
    return float(runs["wall_time_s"].sum()) / 60 if "wall_time_s" in runs else 0.0


def _figure_lines(path: str, caption: str) -> list[str]:
    return [f"![{caption}]({path})", "", f"*{caption}*", ""]


def write_answer(spec: StudySpec, runs: pd.DataFrame, report: Report, out_dir: Path) -> Path:
    """Write ``out_dir/answer.json``, the report's summary that the index is built from."""
    key = report.key_figure
    summary = {"study": spec.name, "question": short_question(spec), "answer": report.answer,
               "key_figure": f"{key.name}.png" if key else None, "key_figure_caption": key.caption if key else None,
               "compute_min": round(compute_minutes(runs), 3), "tuning": spec.is_tuning}
    path = out_dir / ANSWER_FILE
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return path


def write_report(spec: StudySpec, runs: pd.DataFrame, report: Report, out_dir: Path,
                 tidy: Mapping[str, pd.DataFrame] | None = None) -> Path:
    """Write ``out_dir/README.md`` (question, answer with the key figure, design, results, conclusion), its
    files and ``answer.json``; returns the README path.

    ``tidy`` are per-seed tables shipped beside ``runs.csv`` (``curves``: per run per epoch; the instrument
    tables), so that every analysis can be re-derived from the report folder alone.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out_dir / "runs.csv", index=False)
    shipped = write_tidy(tidy or {}, out_dir)
    save_figures(report.figures, out_dir)
    key = report.key_figure
    parts = [f"# {spec.name}", "", f"**Question.** {spec.question}", "", "## Answer", "", report.answer, "",
             *(_figure_lines(f"{key.name}.png", key.caption) if key else []),
             "## Design", "", *design_lines(spec, runs), "", "## Results", ""]
    for table in report.tables:
        table.frame.to_csv(out_dir / f"{table.name}.csv", index=False)
        shown, step = excerpt(table.frame)
        link = f"[{table.name}.csv]({table.name}.csv)"
        note = (f" (excerpt: one row in {step} of its {len(table.frame)}; all rows in {link})" if step > 1
                else f" ({link})")
        parts += [f"**{table.caption}**{note}", "", _markdown(shown), ""]
    for figure in report.figures:
        if figure is not key:
            parts += _figure_lines(f"{figure.name}.png", figure.caption)
    parts += ["## Conclusion", "", *[f"- {line}" for line in report.conclusions], ""]
    if report.notes:
        parts += ["## Notes", "", *[f"- {line}" for line in report.notes], ""]
    parts += [f"*Generated by `dropout-lab study report {spec.name}` on {dt.date.today()} from the stored runs "
              f"(tidy tables: " + ", ".join(f"[{n}.csv]({n}.csv)" for n in ["runs", *shipped])
              + "). Every number and sentence above is computed from them.*", ""]
    write_answer(spec, runs, report, out_dir)
    path = out_dir / "README.md"
    path.write_text("\n".join(parts))
    return path


def write_index(reports_dir: Path) -> Path:
    """``reports_dir/README.md``, "Answers to the chapter's exercises", from the ``answer.json`` of every report
    folder: per study its question, answer and key figure; the tuning studies as one table; the total compute.
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
            lines += [f"## {name}", "", f"*{a['question']}*", "",
                      f"{a['answer']} [Full report]({name}/README.md) · compute: {a['compute_min']:.1f} min.", ""]
            if a["key_figure"]:
                lines += [f"![{a['key_figure_caption']}]({name}/{a['key_figure']})", ""]
    if tuning:
        rows = [[f"[{name}]({name}/README.md)", a["answer"].replace("|", r"\|"), f"{a['compute_min']:.1f}"]
                for name, a in tuning.items()]
        lines += ["## Tuning studies behind exercise 7", "", "| study | answer | compute (min) |",
                  "| --- | --- | ---: |", *["| " + " | ".join(row) + " |" for row in rows], ""]
    total = sum(a["compute_min"] for a in answers.values())
    lines += [f"Total training compute of these studies: {total / 60:.1f} h (the sum of the runs' wall times on the "
              "machines that ran them).", ""]
    if older:
        lines += ["Not yet regenerated (reports written by an earlier version, not summarised above): "
                  + ", ".join(f"[{name}]({name}/README.md)" for name in older) + ".", ""]
    path = reports_dir / "README.md"
    path.write_text("\n".join(lines))
    return path
