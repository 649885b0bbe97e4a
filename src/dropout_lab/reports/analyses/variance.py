"""Exercise 3: variance of each hidden layer's activations before and after the noise, over training.

Reads the activation monitor's rows (the store's ``activations`` instrument table). ``mode`` is ``train`` for
noisy passes (training batches, ``source=train``, and the probe batch with the noise on,
``probe_train``) and ``eval`` for the probe batch with the noise off (``probe_eval``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator, NullFormatter

from dropout_lab.analysis.stats import geometric_mean, log_t_band, paired_log_ratios, summarize_metrics, with_holm
from dropout_lab.reports.analyses.instruments import instrument_rows
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.report_parts import Figure, Report, Table
from dropout_lab.reports.wording import direction, holm_text, ratio_ci

MODES = {"train": "train", "probe_train": "train", "probe_eval": "eval"}
BERNOULLI = ("dropout", "dropout_concise")
#: A configuration whose noisy passes change the variance by less than this (relative) applies no noise.
NOISE_FREE_TOL = 1e-6


def predicted_after_variance(mean: float | np.ndarray, var: float | np.ndarray,
                             p: float | np.ndarray) -> float | np.ndarray:
    """Variance after inverted dropout at rate p of activations with this mean and variance.

    h' = h m / (1 - p), m ~ Bernoulli(1 - p) independent of h: E[h'] = E[h] and
    E[h'^2] = E[h^2] / (1 - p), so Var[h'] = (Var[h] + p E[h]^2) / (1 - p).
    """
    return (var + p * mean ** 2) / (1 - p)


def activation_table(data: StudyData) -> pd.DataFrame:
    """Tidy monitor rows with trial, seed, configuration and ``mode`` (train/eval)."""
    rows = instrument_rows(data, "activations")
    return rows.assign(mode=rows["source"].map(MODES)) if not rows.empty else rows


def configured_rates(runs: pd.DataFrame) -> pd.DataFrame:
    """Columns trial, layer, p: each run's Bernoulli rate per hidden layer from its stored config.

    NaN for a technique other than dropout (``model.noise``); no row for a run whose config has no rate.
    """
    columns = {layer: f"model.dropout_{layer}" for layer in (1, 2) if f"model.dropout_{layer}" in runs}
    if not columns:
        return pd.DataFrame({"trial": pd.Series(dtype=int), "layer": pd.Series(dtype=int),
                             "p": pd.Series(dtype=float)})
    noise = runs["model.noise"] if "model.noise" in runs else pd.Series(None, index=runs.index, dtype=object)
    bernoulli = noise.fillna("dropout").isin(BERNOULLI)
    parts = [pd.DataFrame({"trial": runs["trial"], "layer": layer,
                           "p": runs[column].astype(float).where(bernoulli, np.nan)})[runs[column].notna()]
             for layer, column in columns.items()]
    return pd.concat(parts, ignore_index=True)


def _estimated_rates(acts: pd.DataFrame) -> pd.DataFrame:
    """Rate per (trial, layer) from the zero fractions of noisy passes: p = (z_after - z_before) / (1 - z_before)."""
    wide = acts[acts["mode"] == "train"].pivot_table(index=["trial", "layer", "source", "step"], columns="stage",
                                                     values="zero_frac")
    p = ((wide["after"] - wide["before"]) / (1 - wide["before"])).clip(lower=0)
    return p.groupby(["trial", "layer"]).median().rename("p").reset_index()


def dropout_rates(data: StudyData, acts: pd.DataFrame) -> pd.DataFrame:
    """Columns trial, layer, p, p_source: the rate of the stored config (NaN for a technique other than dropout),
    or, for a run whose config has no rate, the rate estimated from zero fractions."""
    estimated = _estimated_rates(acts).assign(p_source="estimated from zero fractions")
    configured = configured_rates(data.runs).assign(p_source="configured")
    merged = estimated.merge(configured, on=["trial", "layer"], how="left", suffixes=("_estimated", ""),
                             indicator=True)
    missing = merged["_merge"] == "left_only"
    merged.loc[missing, "p"] = merged.loc[missing, "p_estimated"]
    merged.loc[missing, "p_source"] = merged.loc[missing, "p_source_estimated"]
    return merged[["trial", "layer", "p", "p_source"]]


def inflation_table(acts: pd.DataFrame, rates: pd.DataFrame) -> pd.DataFrame:
    """One row per noisy pass and layer: before/after mean and variance, rate, predicted and measured ratios."""
    noisy = acts[acts["mode"] == "train"]
    wide = noisy.pivot_table(index=["configuration", "trial", "seed", "source", "epoch", "step", "layer"],
                             columns="stage", values=["mean", "var"])
    wide.columns = [f"{stat}_{stage}" for stat, stage in wide.columns]
    wide = wide.reset_index().merge(rates, on=["trial", "layer"], how="left")
    predicted = predicted_after_variance(wide["mean_before"], wide["var_before"], wide["p"])
    return wide.assign(var_predicted=predicted, ratio_after_before=wide["var_after"] / wide["var_before"],
                       ratio_predicted=predicted / wide["var_before"],
                       measured_over_predicted=wide["var_after"] / predicted)


def noisy_configurations(inflation: pd.DataFrame) -> list[str]:
    """Configurations whose noise changes the train-mode variance (after differs from before)."""
    change = (inflation["ratio_after_before"] - 1).abs().groupby(inflation["configuration"]).median()
    return sorted(change[change > NOISE_FREE_TOL].index)


def final_epoch_table(acts: pd.DataFrame) -> pd.DataFrame:
    """Variance (and zero fraction) at each run's last epoch per (configuration, layer, stage, mode), probe batch."""
    probe = acts[acts["source"] != "train"]
    last = probe[probe["epoch"] == probe.groupby("trial")["epoch"].transform("max")]
    return summarize_metrics(last, ["configuration", "layer", "stage", "mode"], ["var", "zero_frac"])


def inflation_summary(inflation: pd.DataFrame) -> pd.DataFrame:
    """Last epoch, probe batch, noise on: measured and predicted ratios per configuration and layer."""
    probe = inflation[inflation["source"] == "probe_train"]
    last = probe[probe["epoch"] == probe.groupby("trial")["epoch"].transform("max")]
    table = summarize_metrics(last, ["configuration", "layer"],
                              ["ratio_after_before", "ratio_predicted", "measured_over_predicted"])
    rel_error = (inflation["measured_over_predicted"] - 1).abs().groupby(
        [inflation["configuration"], inflation["layer"]]).mean().rename("mean_abs_rel_error_all_passes")
    p = inflation.groupby(["configuration", "layer"])["p"].mean()
    return (table.merge(p.reset_index(), on=["configuration", "layer"])
            .merge(rel_error.reset_index(), on=["configuration", "layer"]))


def pre_noise_comparison(acts: pd.DataFrame, noisy: list[str], base: str) -> pd.DataFrame:
    """Last-epoch pre-noise variance (probe batch, eval mode) of each noisy configuration over ``base``, per layer."""
    probe = acts[(acts["source"] == "probe_eval") & (acts["stage"] == "before")]
    last = probe[probe["epoch"] == probe.groupby("trial")["epoch"].transform("max")]
    parts = [paired_log_ratios(last[last["layer"] == layer], ["configuration"], "var", {"configuration": base})
             .assign(layer=layer) for layer in sorted(last["layer"].unique())]
    parts = [part for part in parts if "configuration" in part]
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, ignore_index=True)
    table = table[table["configuration"].isin(noisy)]
    front = ["configuration", "layer"]
    return with_holm(table[[*front, *[c for c in table.columns if c not in front]]])


def evolution_table(acts: pd.DataFrame) -> pd.DataFrame:
    """Pre-noise variance (probe batch, eval mode) at the last over the first epoch, per configuration and layer."""
    probe = acts[(acts["source"] == "probe_eval") & (acts["stage"] == "before")]
    first, last = probe.groupby("trial")["epoch"].transform("min"), probe.groupby("trial")["epoch"].transform("max")
    ends = probe[(first < last) & ((probe["epoch"] == first) | (probe["epoch"] == last))]
    ends = ends.assign(end=np.where(ends["epoch"] == first[ends.index], "first", "last"))
    parts = []
    for (config, layer), group in ends.groupby(["configuration", "layer"]):
        ratios = paired_log_ratios(group, ["end"], "var", {"end": "first"}, pair="trial")
        if not ratios.empty:
            parts.append(ratios.drop(columns="end").assign(configuration=config, layer=layer,
                                                           first_epoch=int(group["epoch"].min()),
                                                           last_epoch=int(group["epoch"].max())))
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, ignore_index=True)
    front = ["configuration", "layer", "first_epoch", "last_epoch"]
    return with_holm(table[[*front, *[c for c in table.columns if c not in front]]])


def variance_plot(acts: pd.DataFrame, x: str, row: str | None, title: str) -> MplFigure:
    """Variance over training: columns = hidden layer, hue = configuration, style = stage; geometric mean, 95% CI."""
    grid = sns.relplot(data=acts, x=x, y="var", col="layer", row=row, hue="configuration", style="stage",
                       style_order=["before", "after"], kind="line", estimator=geometric_mean, errorbar=log_t_band,
                       height=3.2, aspect=1.3,
                       facet_kws={"sharey": False, "margin_titles": True})
    grid.set(yscale="log")
    grid.set_axis_labels("epoch" if x == "epoch" else "optimizer step", "activation variance (log scale)")
    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    grid.figure.suptitle(title)
    grid.figure.subplots_adjust(top=0.9 if row else 0.82)
    return grid.figure


def inflation_plot(inflation: pd.DataFrame) -> MplFigure:
    """Measured against predicted after-noise variance for every noisy pass, with the identity line."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sns.scatterplot(data=inflation, x="var_predicted", y="var_after", hue="configuration", style="layer",
                    alpha=0.6, ax=ax)
    values = inflation[["var_predicted", "var_after"]]
    bounds = [values.min().min(), values.max().max()]
    ax.plot(bounds, bounds, color="black", linewidth=1, linestyle="--", label="measured = predicted")
    ax.set(xscale="log", yscale="log", xlabel="predicted (Var[h] + p E[h]²) / (1 − p)",
           ylabel="measured variance after the noise")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _inflation_sentences(summary: pd.DataFrame, noisy: list[str], last_epoch: int) -> list[str]:
    out = []
    for _, r in summary[summary["configuration"].isin(noisy) & summary["p"].notna()].iterrows():
        out.append(
            f"{r['configuration']}, layer {r['layer']} (p = {r['p']:.2g}), epoch {last_epoch}, train mode: the noise "
            f"multiplies the variance by {r['ratio_after_before_mean']:.3f} "
            f"({ratio_ci(r['ratio_after_before_ci_low'], r['ratio_after_before_ci_high'])}, n={int(r['n'])}); "
            f"(Var[h] + p E[h]²)/(1 − p) from the pre-noise mean and variance predicts "
            f"{r['ratio_predicted_mean']:.3f}, measured/predicted = {r['measured_over_predicted_mean']:.4f} "
            f"({ratio_ci(r['measured_over_predicted_ci_low'], r['measured_over_predicted_ci_high'])}); mean "
            f"absolute relative error over all recorded noisy passes {100 * r['mean_abs_rel_error_all_passes']:.2f}%.")
    return out


def _answer(summary: pd.DataFrame, noisy: list[str], comparison: pd.DataFrame, base: str | None) -> str:
    rows = summary[summary["configuration"].isin(noisy)]
    if rows.empty:
        return "No configuration's noise changed the activation variance (after = before in every recorded pass)."
    inflation = "; ".join(f"layer {r['layer']} x{r['ratio_after_before_mean']:.2f} "
                          f"(predicted x{r['ratio_predicted_mean']:.2f})" for _, r in rows.iterrows())
    text = (f"With {', '.join(noisy)}, the noise multiplies the train-mode activation variance at the last epoch: "
            f"{inflation}")
    if base is not None and not comparison.empty:
        words = [f"layer {r['layer']} {direction(r, 'larger', 'smaller', 'not significantly different', 1.0, 'ratio')} "
                 f"(x{r['ratio']:.2f})" for _, r in comparison.iterrows()]
        text += f"; pre-noise variance vs {base} (eval mode): " + ", ".join(words)
    return text + "."


def analyze(data: StudyData) -> Report:
    """Variance per hidden layer before/after the noise over training, its inflation and the dropout/no-dropout gap."""
    report = Report()
    acts = activation_table(data) if not data.runs.empty else pd.DataFrame()
    if acts.empty:
        report.notes.append("No finished run recorded activations (monitor.enabled=true).")
        return report
    rates = dropout_rates(data, acts)
    inflation = inflation_table(acts, rates)
    noisy = noisy_configurations(inflation)
    clean = [c for c in sorted(acts["configuration"].unique()) if c not in noisy]
    base = clean[0] if len(clean) == 1 else None
    last_epoch = int(acts["epoch"].max())

    final = final_epoch_table(acts)
    summary = inflation_summary(inflation)
    comparison = pre_noise_comparison(acts, noisy, base) if base and noisy else pd.DataFrame()
    evolution = evolution_table(acts)
    report.tables.append(Table("final_epoch_variance", final,
                               f"Activation variance and zero fraction at the last epoch ({last_epoch}), probe batch, "
                               "per configuration, layer, stage and mode: mean over seeds with 95% t-interval"))
    report.tables.append(Table("noise_inflation", summary,
                               "Train mode, probe batch, last epoch: variance after/before the noise, the ratio "
                               "predicted by (Var[h] + p E[h]^2)/(1 - p), and measured/predicted (mean, 95% CI over "
                               "seeds); error column over every recorded noisy pass"))
    if not comparison.empty:
        report.tables.append(Table("pre_noise_vs_no_noise", comparison,
                                   f"Last-epoch pre-noise variance (eval mode) over {base}'s, paired on seeds: "
                                   "geometric-mean ratio, paired t-test on log variance, Holm over layers"))
    if not evolution.empty:
        report.tables.append(Table("variance_evolution", evolution,
                                   "Pre-noise variance (eval mode) at the last over the first epoch, paired on runs: "
                                   "geometric-mean ratio, paired t-test on log variance, Holm over all rows"))

    probe = acts[acts["source"] != "train"]
    report.figures.append(Figure("variance_per_epoch", variance_plot(probe, "epoch", "mode",
                                                                     "Probe batch at the end of each epoch"),
                                 "Activation variance per hidden layer (columns) at the end of each epoch, noise on "
                                 "(mode=train) and off (mode=eval), before (solid) and after (dashed) the noise; "
                                 "geometric mean over seeds with 95% t-interval band (of log variance), log scale"))
    train_rows = acts[acts["source"] == "train"]
    if not train_rows.empty:
        report.figures.append(Figure("variance_per_step", variance_plot(train_rows, "step", None,
                                                                        "Training batches"),
                                     "Activation variance of the training batch every N steps, before and after "
                                     "the noise; geometric mean over seeds with 95% t-interval band (of log "
                                     "variance), log scale"))
    predicted = inflation[inflation["configuration"].isin(noisy) & inflation["p"].notna()]
    if not predicted.empty:
        report.figures.append(Figure("predicted_vs_measured", inflation_plot(predicted),
                                     "Variance after the noise: measured against the inverted-dropout prediction "
                                     "from the pre-noise mean and variance, every recorded noisy pass"))

    report.conclusions.append(_answer(summary, noisy, comparison, base))
    report.conclusions += _inflation_sentences(summary, noisy, last_epoch)
    for config in clean:
        rows = summary[summary["configuration"] == config]
        report.conclusions.append(
            f"{config}: no activation noise, the variance after equals the variance before in every recorded pass "
            f"(largest ratio deviation {(rows['ratio_after_before_mean'] - 1).abs().max():.2g}).")
    for _, r in comparison.iterrows():
        verdict = direction(r, "larger than", "smaller than", "not significantly different from", 1.0, "ratio")
        report.conclusions.append(
            f"At the last epoch (eval mode, before the noise), layer {r['layer']}'s activation variance with "
            f"{r['configuration']} is {verdict} that with {base}: ratio {r['ratio']:.3f} "
            f"({ratio_ci(r['ratio_ci_low'], r['ratio_ci_high'])}, paired t-test on log variance over "
            f"{int(r['n_pairs'])} seeds, {holm_text(r['p_holm'])}, d_z = {r['cohens_dz']:.2f}).")
    for _, r in evolution.iterrows():
        verdict = direction(r, "grows", "shrinks", "does not change significantly", 1.0, "ratio")
        report.conclusions.append(
            f"{r['configuration']}, layer {r['layer']}: from epoch {r['first_epoch']} to {r['last_epoch']} the "
            f"pre-noise variance {verdict}: x{r['ratio']:.3f} ({ratio_ci(r['ratio_ci_low'], r['ratio_ci_high'])}, "
            f"paired t-test on log variance over {int(r['n_pairs'])} runs, {holm_text(r['p_holm'])}).")
    if base is None and noisy:
        report.notes.append("No single noise-free configuration to compare the pre-noise variance with.")
    if (rates["p_source"] != "configured").any():
        report.notes.append("Some rates were estimated from zero fractions: p = (z_after - z_before)/(1 - z_before).")
    report.notes.append("Variances are over all elements of the batch (units and examples); the prediction assumes "
                        "a Bernoulli mask independent of the activations, scaled by 1/(1-p).")
    report.notes.append(f"Selection: no model is selected; every finished run contributes its activations at every "
                        f"recorded epoch (1 to {last_epoch}), and the last-epoch tables use epoch {last_epoch} of "
                        "every run. Accuracy is not compared here.")
    return report
