"""Shared seaborn figure helpers (report theme, labelled axes); bars and bands are the tables' ``t_interval``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from dropout_lab.analysis.stats import t_interval


@contextmanager
def report_theme() -> Iterator[None]:
    """The look of every report figure (seaborn's whitegrid style, notebook sizes), for figures made inside.

    Seaborn's strip plots jitter their dots with numpy's global random generator: it is seeded inside
    (and restored on the way out), so a report rebuilt from the same runs is the same file.
    """
    state = np.random.get_state()
    np.random.seed(0)
    try:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
            yield
    finally:
        np.random.set_state(state)


@contextmanager
def closing_new_figures() -> Iterator[None]:
    """Close every pyplot figure opened inside on the way out, saved or not (an analysis that failed half-way
    included), so that building a report leaves no figure open."""
    before = set(plt.get_fignums())
    try:
        yield
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)


def point_plot(runs: pd.DataFrame, x: str, y: str, hue: str | None = None, xlabel: str = "",
               ylabel: str = "") -> Figure:
    """Mean of ``y`` per ``x`` (and ``hue``) with 95% t-based CI bars, seeds as dots."""
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.stripplot(data=runs, x=x, y=y, hue=hue, dodge=hue is not None, alpha=0.35, ax=ax, legend=False)
    sns.pointplot(data=runs, x=x, y=y, hue=hue, dodge=0.3 if hue else False, errorbar=t_interval,
                  linestyle="none", capsize=0.1, ax=ax)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    fig.tight_layout()
    return fig


def curve_plot(curves: pd.DataFrame, y: str, hue: str, ylabel: str, style: str | None = None) -> Figure:
    """Per-epoch ``y`` by ``hue``: mean over seeds with a 95% CI band."""
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=curves, x="epoch", y=y, hue=hue, style=style, errorbar=t_interval, ax=ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig
