"""Write a study's report folder: README.md, CSV tables, PNG figures and the tidy run table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from dropout_lab.reports.model import Report
from dropout_lab.studies.grid import grid_cells
from dropout_lab.studies.spec import StudySpec

#: Where ``study report`` writes by default: ``reports/`` under the current folder.
REPORTS_DIR = Path("reports")


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


def design_lines(spec: StudySpec, runs: pd.DataFrame) -> list[str]:
    """The study's design as report bullet points, with what actually ran."""
    lines = [f"- overlay: `experiment={spec.experiment}`" if spec.experiment else "- overlay: per grid cell"]
    if spec.overrides:
        lines.append("- fixed overrides: " + ", ".join(f"`{o}`" for o in spec.overrides))
    lines.append(f"- epochs per run: {spec.epochs}; seeds: {list(spec.seeds)}")
    if spec.grid:
        cells = len(grid_cells(spec)) // len(spec.seeds)
        lines.append("- grid: " + "; ".join(f"`{k}` in {list(v)}" for k, v in spec.grid.items())
                     + f" ({cells} configurations x {len(spec.seeds)} seeds)")
    if spec.search_space:
        lines.append(f"- tuned: {', '.join(spec.search_space)} with {spec.sampler}, {spec.n_trials} trials, "
                     f"pruner {spec.pruner}")
    finished = runs[runs["state"] == "COMPLETE"] if "state" in runs else runs
    states = runs["state"].value_counts() if "state" in runs else pd.Series(dtype=int)
    retried = int((runs["attempts"] - 1).sum()) if "attempts" in runs else 0
    lines.append(f"- runs completed: {len(finished)}; pruned: {int(states.get('PRUNED', 0))}; failed: "
                 f"{int(states.get('FAIL', 0))}; attempts lost to a dead worker and re-run: {retried}; "
                 f"training wall time: {runs['wall_time_s'].sum() / 60:.1f} min on this machine")
    if "engine" in runs and runs["engine"].notna().any():
        engines = runs["engine"].value_counts()
        lines.append("- engine: " + ", ".join(f"`{name}` ({count} run{'s' if count != 1 else ''})"
                                         for name, count in engines.items())
                     + " (`per-run`: one run per process at a time; `population(K=..., precision)`: K runs fused"
                       " into one stacked network, see the README's Populations section)")
    lines.append("- selection metric: validation split held out of the training images; final numbers: test set. "
                 "Each run records its last epoch (`test_acc`) and its best-validation epoch (`best_epoch`, "
                 "`best_test_acc`: early stopping's choice); the tables say which they use")
    return lines


def write_report(spec: StudySpec, runs: pd.DataFrame, report: Report, out_dir: Path,
                 tidy: Mapping[str, pd.DataFrame] | None = None) -> Path:
    """Write ``out_dir/README.md`` and its files; returns the README path.

    ``tidy`` are per-seed tables shipped beside ``runs.csv`` (``curves``: per run per epoch; the instrument
    tables), so that every analysis can be re-derived from the report folder alone.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out_dir / "runs.csv", index=False)
    shipped = write_tidy(tidy or {}, out_dir)
    parts = [f"# {spec.name}", "", f"**Question.** {spec.question}", "", "## Design", "",
             *design_lines(spec, runs), "", "## Results", ""]
    for table in report.tables:
        table.frame.to_csv(out_dir / f"{table.name}.csv", index=False)
        shown, step = excerpt(table.frame)
        link = f"[{table.name}.csv]({table.name}.csv)"
        note = (f" (excerpt: one row in {step} of its {len(table.frame)}; all rows in {link})" if step > 1
                else f" ({link})")
        parts += [f"**{table.caption}**{note}", "", _markdown(shown), ""]
    for figure in report.figures:
        figure.figure.savefig(out_dir / f"{figure.name}.png", dpi=110)
        plt.close(figure.figure)
        parts += [f"![{figure.caption}]({figure.name}.png)", "", f"*{figure.caption}*", ""]
    parts += ["## Conclusion", "", *[f"- {line}" for line in report.conclusions], ""]
    if report.notes:
        parts += ["## Notes", "", *[f"- {line}" for line in report.notes], ""]
    parts += [f"*Generated by `dropout-lab study report {spec.name}` on {dt.date.today()} from the stored runs "
              f"(tidy tables: " + ", ".join(f"[{n}.csv]({n}.csv)" for n in ["runs", *shipped])
              + "). Every number and sentence above is computed from them.*", ""]
    path = out_dir / "README.md"
    path.write_text("\n".join(parts))
    return path


def write_index(reports_dir: Path, answers: dict[str, tuple[str, str, float]]) -> Path:
    """``reports/README.md``: "Answers to the chapter's exercises", one row per study (question, answer,
    training compute in minutes), keeping the rows of other studies, and the total compute."""
    path = reports_dir / "README.md"
    rows: dict[str, list[str]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("| [") and "](" in line:
                cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
                rows[line.split("[", 1)[1].split("]", 1)[0]] = cells
    for name, (question, answer, minutes) in answers.items():
        rows[name] = [f"[{name}]({name}/README.md)", question, answer, f"{minutes:.1f}"]

    def minutes_of(cells: list[str]) -> float:
        try:
            return float(cells[3])
        except (IndexError, ValueError):  # a row written before compute was recorded
            return 0.0

    total = sum(minutes_of(cells) for cells in rows.values())
    older = sorted(name for name, cells in rows.items() if len(cells) < 4 or not cells[3])
    lines = ["# Answers to the chapter's exercises", "",
             "Each row is a study's answer, computed from its stored runs by `dropout-lab study report NAME`; "
             "its report holds the design, the tables, the figures and the per-seed data.", "",
             "| study | question | answer | compute (min) |", "| --- | --- | --- | ---: |",
             *["| " + " | ".join((cells + [""] * 4)[:4]) + " |" for _, cells in sorted(rows.items())], "",
             f"Total training compute of these studies: {total / 60:.1f} h (the sum of the runs' wall times on the "
             "machines that ran them).", ""]
    if older:
        lines += [f"Rows without a compute figure ({', '.join(older)}) were written by an earlier version of the "
                  "reports from earlier runs, and are superseded when their study is rerun and reported.", ""]
    path.write_text("\n".join(lines))
    return path
