"""What an analysis produces: tables, figures and conclusion sentences computed from stored runs."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure as MplFigure


@dataclass
class Table:
    """A result table, written as CSV and shown in the report."""

    name: str
    frame: pd.DataFrame
    caption: str
    #: The columns the README shows (None: all); the CSV always holds every column.
    shown: list[str] | None = None


@dataclass
class Figure:
    """A seaborn/matplotlib figure, written as PNG; it stays open until the writer saves and closes it."""

    name: str
    figure: MplFigure
    caption: str


@dataclass
class Report:
    """The computed content of one study's report."""

    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    conclusions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: A selection-aware reading printed after the answer in answer.json and the index (after a declared plan's
    #: verdicts too, labelled as the report's reading, not the plan's), e.g. which configurations may be best.
    answer_note: str | None = None

    @property
    def answer(self) -> str:
        """The one-sentence answer that opens the report and the index: the first conclusion."""
        return self.conclusions[0] if self.conclusions else "no finished runs yet"

    @property
    def key_figure(self) -> Figure | None:
        """The figure shown with the answer: the first one (None without figures)."""
        return self.figures[0] if self.figures else None


@dataclass
class PlanSection:
    """What a planned study's report opens with (built by :mod:`dropout_lab.reports.plan_section`): its declared
    plan, the answer and verdicts that plan gives (tables, sentences, its figure) and its sensitivity readings."""

    plan_lines: list[str]
    answer: str
    verdict_lines: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    reference_lines: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    sensitivity_tables: list[Table] = field(default_factory=list)
    sensitivity_lines: list[str] = field(default_factory=list)
    #: Counts for the index: comparisons declared and decided.
    decided: int = 0
    declared: int = 0
    #: False for a plan that declares only its primary metric (a tuning study's): its answer is the analysis's own.
    gives_verdicts: bool = True

    @property
    def key_figure(self) -> Figure | None:
        """The figure shown with the answer in the index: the plan's figure (None before the first look)."""
        return self.figures[0] if self.figures else None
