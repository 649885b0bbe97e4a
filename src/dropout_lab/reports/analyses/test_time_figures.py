"""Exercise 4's figures: accuracy, NLL and ECE against T, and the cost of T noisy passes (from ``test_time.py``'s
tidy rows and summary)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from dropout_lab.analysis.stats import t_interval

COMPARED = ("accuracy", "nll", "ece")
LABELS = {"accuracy": "test accuracy", "nll": "test NLL", "ece": "test ECE (15 bins)", "seconds": "seconds"}


def row_of(table: pd.DataFrame, config: str, mode: str, T: int | None = None, metric: str | None = None) -> pd.Series:
    """The row of ``table`` for one configuration and mode (and T, metric where given)."""
    mask = (table["configuration"] == config) & (table["mode"] == mode)
    if T is not None:
        mask &= table["T"] == T
    if metric is not None:
        mask &= table["metric"] == metric
    return table[mask].iloc[0]


def _t_ticks(ax: Axes, T: pd.Series) -> None:
    """Ticks at the evaluated T values, written as plain numbers."""
    ax.set_xticks(sorted(T.unique()))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def metrics_plot(rows: pd.DataFrame, summary: pd.DataFrame) -> MplFigure:
    """Accuracy, NLL and ECE against T: MC (line, 95% t band), deterministic (dashed, band), single pass (point)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    mc = rows[rows["mode"] == "mc"]
    configs = sorted(rows["configuration"].unique())
    colors = dict(zip(configs, sns.color_palette(n_colors=len(configs))))
    for ax, metric in zip(axes, COMPARED):
        for config in configs:
            tag = f" ({config})" if len(configs) > 1 else ""
            sns.lineplot(data=mc[mc["configuration"] == config], x="T", y=metric, marker="o", color=colors[config],
                         errorbar=t_interval, label=f"MC average of T passes{tag}", ax=ax)
            det, single = row_of(summary, config, "deterministic"), row_of(summary, config, "single")
            ax.axhline(det[f"{metric}_mean"], color=colors[config], linestyle="--", label=f"deterministic{tag}")
            if pd.notna(det[f"{metric}_ci_low"]):
                ax.axhspan(det[f"{metric}_ci_low"], det[f"{metric}_ci_high"], color=colors[config], alpha=0.12)
            err = np.array([[single[f"{metric}_mean"] - single[f"{metric}_ci_low"]],
                            [single[f"{metric}_ci_high"] - single[f"{metric}_mean"]]])
            ax.errorbar([1], [single[f"{metric}_mean"]], yerr=None if np.isnan(err).any() else err, fmt="s",
                        color=colors[config], markeredgecolor="black", markersize=8, capsize=4,
                        label=f"single noisy pass{tag}")
        ax.set(xscale="log", xlabel="T (noisy passes averaged)", ylabel=LABELS[metric])
        _t_ticks(ax, mc["T"])
        ax.legend(fontsize=7) if metric == "accuracy" else ax.get_legend().remove()
    fig.tight_layout()
    return fig


def cost_plot(rows: pd.DataFrame, summary: pd.DataFrame) -> MplFigure:
    """Seconds of the test evaluation against T (log-log), with the deterministic pass and T x its time."""
    fig, ax = plt.subplots(figsize=(6, 4))
    mc = rows[rows["mode"] == "mc"]
    configs = sorted(rows["configuration"].unique())
    colors = dict(zip(configs, sns.color_palette(n_colors=len(configs))))
    for config in configs:
        tag = f" ({config})" if len(configs) > 1 else ""
        sns.lineplot(data=mc[mc["configuration"] == config], x="T", y="seconds", marker="o", color=colors[config],
                     errorbar=t_interval, label=f"MC, T passes{tag}", ax=ax)
        det = row_of(summary, config, "deterministic")["seconds_mean"]
        ts = np.sort(mc["T"].unique())
        ax.axhline(det, color=colors[config], linestyle="--", label=f"deterministic pass{tag}")
        ax.plot(ts, ts * det, color=colors[config], linestyle=":", label=f"T x deterministic{tag}")
    ax.set(xscale="log", yscale="log", xlabel="T (noisy passes)", ylabel="seconds for the test split")
    _t_ticks(ax, mc["T"])
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
