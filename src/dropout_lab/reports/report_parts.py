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

    @property
    def answer(self) -> str:
        """The one-sentence answer that opens the report and the index: the first conclusion."""
        return self.conclusions[0] if self.conclusions else "no finished runs yet"

    @property
    def key_figure(self) -> Figure | None:
        """The figure shown with the answer: the first one (None without figures)."""
        return self.figures[0] if self.figures else None
