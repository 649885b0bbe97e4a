"""Exercise 2: long training with and without dropout; from which epoch does dropout pay?"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure as MplFigure

from dropout_lab.analysis.stats import (
    ALPHA,
    paired_test,
    paired_with_tost,
    summarize_over_seeds,
    t_interval,
    tost_of,
    with_holm,
)
from dropout_lab.reports.analyses.compare import BEST_METRIC, SELECTION_NOTE, has_best
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.labels import levels_by_rates, total_rate
from dropout_lab.reports.report_parts import Figure, Report, Table
from dropout_lab.reports.wording import ci_text, describe_test, equivalence_text, pct

CONFIG = "configuration"
CURVES = (("train_loss", "training loss (dropout on)"), ("val_loss", "validation loss"),
          ("val_acc", "validation accuracy"))


def config_labels(data: StudyData, frame: pd.DataFrame) -> pd.Series:
    """Readable configuration names: by dropout rates ('dropout 0.5/0.5', 'no dropout') when the stored configs'
    rates tell the grid's configurations apart (e.g. a grid over overlays), else 'key=value, ...'."""
    names = levels_by_rates(data.runs, data.keys)
    if names is None:
        return data.label(frame)
    keys = frame[data.keys].apply(tuple, axis=1) if len(data.keys) > 1 else frame[data.keys[0]]
    return keys.map(names)


def treatment_and_reference(data: StudyData, runs: pd.DataFrame) -> tuple[str, str]:
    """The dropout configuration and the no-dropout one it is compared with (most vs least total dropout rate
    in the stored configs; the grid's first against its last without stored rates)."""
    configs = runs.assign(rate=total_rate(runs)).drop_duplicates(CONFIG)
    if configs["rate"].notna().sum() >= 2:
        ordered = configs.sort_values("rate", kind="stable")
        return ordered[CONFIG].iloc[-1], ordered[CONFIG].iloc[0]
    return configs[CONFIG].iloc[0], configs[CONFIG].iloc[-1]  # grid order: first against last


def finished_curves(data: StudyData, runs: pd.DataFrame) -> pd.DataFrame:
    """Curves of the finished runs with their configuration (from ``runs``), seed and generalization gap."""
    curves = data.curves[data.curves["trial"].isin(runs["trial"])]
    curves = curves.drop(columns=[CONFIG], errors="ignore").merge(runs[["trial", CONFIG]], on="trial")
    return curves.assign(gap=curves["val_loss"] - curves["train_loss"])


def curves_figure(curves: pd.DataFrame, order: list[str]) -> MplFigure:
    """Training loss, validation loss and validation accuracy per epoch: mean over seeds, 95% CI band."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (column, label) in zip(axes, CURVES):
        sns.lineplot(data=curves, x="epoch", y=column, hue=CONFIG, hue_order=order, errorbar=t_interval, ax=ax,
                     legend=ax is axes[0])
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    axes[0].legend(title=None)
    fig.suptitle("Mean over seeds with 95% t-interval band")
    fig.tight_layout()
    return fig


def gap_figure(curves: pd.DataFrame, order: list[str]) -> MplFigure:
    """Validation loss minus training loss per epoch, mean over seeds with 95% CI band."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.axhline(0, color="grey", lw=1, ls="--")
    sns.lineplot(data=curves, x="epoch", y="gap", hue=CONFIG, hue_order=order, errorbar=t_interval, ax=ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss - training loss")
    ax.legend(title=None)
    ax.set_title("Generalization gap (training loss measured with dropout on)")
    fig.tight_layout()
    return fig


def best_epochs(curves: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the epoch of best val_acc and of lowest val_loss, mean and 95% CI over seeds."""
    per_run = curves.groupby([CONFIG, "seed", "trial"]).apply(
        lambda g: pd.Series({"by val_acc": g.loc[g["val_acc"].idxmax(), "epoch"],
                             "by val_loss": g.loc[g["val_loss"].idxmin(), "epoch"],
                             "best val_acc": g["val_acc"].max(), "best val_loss": g["val_loss"].min()}),
        include_groups=False).reset_index()
    long = per_run.melt(id_vars=[CONFIG, "seed"], value_vars=["by val_acc", "by val_loss"],
                        var_name="criterion", value_name="best_epoch")
    table = summarize_over_seeds(long, [CONFIG, "criterion"], "best_epoch")
    last = int(curves["epoch"].max())
    table[["ci_low", "ci_high"]] = table[["ci_low", "ci_high"]].clip(lower=1, upper=last)  # epochs run 1..last
    values = per_run.melt(id_vars=[CONFIG], value_vars=["best val_acc", "best val_loss"], var_name="criterion",
                          value_name="best_value")
    values["criterion"] = values["criterion"].str.replace("best ", "by ")
    return table.merge(values.groupby([CONFIG, "criterion"], as_index=False)["best_value"].mean()
                       .rename(columns={"best_value": "mean_best_value"}), on=[CONFIG, "criterion"])


def per_epoch_tests(curves: pd.DataFrame, treatment: str, reference: str, metric: str = "val_acc") -> pd.DataFrame:
    """Per epoch, treatment minus reference ``metric`` paired on seeds (paired t-test, Holm across epochs)."""
    wide = curves.pivot_table(index=["epoch", "seed"], columns=CONFIG, values=metric, aggfunc="mean")
    if treatment not in wide or reference not in wide:
        return pd.DataFrame()
    diff = (wide[treatment] - wide[reference]).rename("diff").reset_index()
    rows = [{"epoch": epoch, **paired_test(group["diff"])} for epoch, group in diff.groupby("epoch")]
    return with_holm(pd.DataFrame(rows))


def first_epoch_from_which(epochs: pd.Series, condition: pd.Series) -> int | None:
    """The first epoch from which ``condition`` holds at every later epoch, or None if it fails at the last."""
    ordered = pd.DataFrame({"epoch": epochs, "ok": condition.fillna(False).astype(bool)}).sort_values("epoch")
    if ordered.empty or not ordered["ok"].iloc[-1]:
        return None
    failing = ordered.loc[~ordered["ok"], "epoch"]
    later = ordered.loc[ordered["epoch"] > failing.max(), "epoch"] if not failing.empty else ordered["epoch"]
    return int(later.min())


#: Epochs at the end of training whose per-seed mean validation accuracy is compared (fewer when runs are shorter).
LAST_WINDOW = 10


def window_test(curves: pd.DataFrame, treatment: str, reference: str, margin: float,
                window: int = LAST_WINDOW) -> dict[str, Any]:
    """Per seed, the mean validation accuracy over the last ``window`` epochs; treatment minus reference, paired
    on seeds (paired t-test and TOST within +-``margin``). ``window`` in the result is the number of epochs used."""
    last = int(curves["epoch"].max())
    window = min(window, last)
    tail = curves[curves["epoch"] > last - window]
    wide = tail.pivot_table(index="seed", columns=CONFIG, values="val_acc", aggfunc="mean")
    return {**paired_with_tost(wide[treatment] - wide[reference], margin), "window": window}


def _gains(window: dict[str, Any]) -> bool:
    return bool(window["p_value"] < ALPHA and window["mean_diff"] > 0)


def paying_epoch(tests: pd.DataFrame, smooth: pd.DataFrame, window: dict[str, Any]) -> int | None:
    """The epoch from which dropout pays: its (smoothed, where available) validation accuracy is significantly
    ahead at that epoch and every later one, and the paired gain over the last epochs (``window``) is significant."""
    curve = smooth if not smooth.empty else tests
    ahead = (curve["mean_diff"] > 0) & (curve["p_value"] < ALPHA)
    return first_epoch_from_which(curve["epoch"], ahead) if _gains(window) else None


def answer_sentence(pays: int | None, last: int, fixed: dict[str, Any], early: dict[str, Any] | None,
                    treatment: str, reference: str, margin: float) -> str:
    """The study's answer in two sentences: from which epoch dropout pays, and the test accuracy at the fixed
    budget and with early stopping."""
    when = (f"{treatment} pays against {reference} from epoch {pays} of {last} on (smoothed validation accuracy "
            "significantly ahead at every later epoch)" if pays is not None
            else f"No epoch of {last} from which {treatment} pays against {reference} is supported")
    budgets = (f"At the fixed budget of {last} epochs its test accuracy is {verdict_text(fixed, margin)} "
               f"({pct(fixed['mean_diff'])}, {ci_text(fixed['ci_low'], fixed['ci_high'])})")
    if early is not None:
        budgets += (f"; with early stopping (each run at its best-validation epoch) it is "
                    f"{verdict_text(early, margin)} ({pct(early['mean_diff'])}, "
                    f"{ci_text(early['ci_low'], early['ci_high'])})")
    return f"{when}. {budgets}."


def pays_sentence(tests: pd.DataFrame, smooth: pd.DataFrame, window: dict[str, Any], treatment: str,
                  reference: str, margin: float) -> str:
    """From which epoch dropout pays, judged on a window, never on the last point alone.

    A headline epoch needs both the smoothed mean difference (``smooth``; the raw one for short runs) above 0 at
    that epoch and every later one, and a significant gain in the per-seed mean over the last epochs (``window``).
    """
    last = int(tests["epoch"].max())
    curve = smooth if not smooth.empty else tests
    smoothing = "smoothed " if not smooth.empty else ""
    above = first_epoch_from_which(curve["epoch"], curve["mean_diff"] > 0)
    pays = paying_epoch(tests, smooth, window)
    span = f"the last {window['window']} epochs"
    over_window = (f"over {span} its per-seed mean validation accuracy differs by {describe_test(window)}"
                   + ("" if _gains(window) else f"; {equivalence_text(tost_of(window), margin)}"))
    if pays is not None:
        head = (f"dropout pays from epoch {pays} on: its {smoothing}mean validation accuracy is significantly above "
                f"at every epoch from {pays} on (above in mean from epoch {above} on), and {over_window}")
    else:
        where = (f"its {smoothing}mean validation accuracy stays above from epoch {above} on, but not significantly "
                 "at every later epoch" if above is not None
                 else f"its {smoothing}mean validation accuracy is not above at the last epoch ({last})")
        head = f"no epoch from which dropout pays is supported: {where}; {over_window}"
    significant = first_epoch_from_which(tests["epoch"], (tests["mean_diff"] > 0) & (tests["p_value"] < ALPHA))
    holm_significant = first_epoch_from_which(tests["epoch"], (tests["mean_diff"] > 0) & (tests["p_holm"] < ALPHA))
    sig = (f"epoch by epoch (unsmoothed) it is significantly ahead (paired t-test, p < {ALPHA}) from epoch "
           f"{significant} on" if significant is not None
           else "epoch by epoch (unsmoothed) it is never significantly ahead up to the last epoch")
    holm = f"from epoch {holm_significant} on" if holm_significant is not None else "never"
    return f"{treatment} vs {reference} over {last} epochs: {head}; {sig} (with Holm across the {len(tests)} " \
           f"epochs: {holm})."


def smoothing_window(n_epochs: int) -> int:
    """Epochs per moving-average window: a tenth of the run (at least 2), or 0 for runs under 10 epochs."""
    return max(2, n_epochs // 10) if n_epochs >= 10 else 0


def smoothed_curves(curves: pd.DataFrame, window: int, metric: str = "val_acc") -> pd.DataFrame:
    """Each run's ``metric`` as the mean over the trailing ``window`` epochs (from epoch ``window`` on)."""
    out = curves.sort_values(["trial", "epoch"]).copy()
    out[metric] = out.groupby("trial")[metric].transform(lambda s: s.rolling(window, min_periods=window).mean())
    return out.dropna(subset=[metric])


def smoothed_pays_sentence(tests: pd.DataFrame, treatment: str, reference: str, window: int) -> str:
    """Where the treatment pays once the epoch-to-epoch noise is averaged out over ``window`` epochs."""
    above = first_epoch_from_which(tests["epoch"], tests["mean_diff"] > 0)
    significant = first_epoch_from_which(tests["epoch"], (tests["mean_diff"] > 0) & (tests["p_value"] < ALPHA))
    head = (f"Averaged over the trailing {window} epochs (validation accuracy jumps from epoch to epoch at "
            f"this learning rate), {treatment}'s validation accuracy is ")
    head += (f"above {reference}'s from epoch {above} on" if above is not None
             else f"not above {reference}'s at the last epoch")
    sig = (f"significantly (paired t-test per window, p < {ALPHA}) from epoch {significant} on"
           if significant is not None else "never significantly up to the last epoch")
    return f"{head}; {sig}."


def final_test_comparison(runs: pd.DataFrame, treatment: str, reference: str, margin: float,
                          metric: str = "test_acc") -> dict[str, Any]:
    """Test accuracy (``metric``: last epoch or best-validation epoch), treatment minus reference, paired on seeds,
    with TOST within +-``margin``."""
    wide = runs.pivot_table(index="seed", columns=CONFIG, values=metric, aggfunc="mean")
    return paired_with_tost(wide[treatment] - wide[reference], margin)


def verdict_text(result: dict[str, Any], margin: float) -> str:
    """'significantly higher/lower' or, when the paired test is not significant, its TOST in words."""
    if result["p_value"] < ALPHA:
        return f"significantly {'higher' if result['mean_diff'] > 0 else 'lower'}"
    return equivalence_text(tost_of(result), margin)


def fixed_budget_sentence(result: dict[str, Any], treatment: str, reference: str, last: int, margin: float) -> str:
    """(a) At the fixed budget: every run's last epoch."""
    return (f"Fixed budget (every run's last epoch, {last}): test accuracy, {treatment} minus {reference}, "
            f"{describe_test(result)}: {verdict_text(result, margin)}.")


def early_stopping_sentence(runs: pd.DataFrame, result: dict[str, Any] | None, treatment: str, reference: str,
                            margin: float) -> str:
    """(b) With early stopping: every run at its best-validation epoch (``result``: the paired comparison of
    ``best_test_acc``, None for stores without it; ``best_epoch`` from ``runs``)."""
    if result is None:
        return ("Early stopping (each run at its best-validation epoch): not answerable from this store, whose run "
                "records have no best-validation-epoch test accuracy (older runs); the best epochs by validation "
                "accuracy are in the table below.")
    text = (f"Early stopping (each run at its best-validation epoch): test accuracy, {treatment} minus {reference}, "
            f"{describe_test(result)}: {verdict_text(result, margin)}")
    if "best_epoch" in runs and runs["best_epoch"].notna().any():
        epochs = final_test_comparison(runs, treatment, reference, margin, "best_epoch")
        means = runs.groupby(CONFIG)["best_epoch"].mean()
        text += (f"; the best-validation epoch is {means[treatment]:.1f} vs {means[reference]:.1f} on average "
                 f"(paired difference {epochs['mean_diff']:+.1f} epochs, 95% CI [{epochs['ci_low']:+.1f}, "
                 f"{epochs['ci_high']:+.1f}], p = {epochs['p_value']:.3g})")
    return text + "."


def gap_sentence(curves: pd.DataFrame, order: list[str]) -> str:
    """The generalization gap at the last epoch per configuration, mean and 95% CI over seeds."""
    last = int(curves["epoch"].max())
    at_last = summarize_over_seeds(curves[curves["epoch"] == last], [CONFIG], "gap").set_index(CONFIG)
    parts = [f"{name} {at_last.loc[name, 'mean']:.3f} (95% CI [{at_last.loc[name, 'ci_low']:.3f}, "
             f"{at_last.loc[name, 'ci_high']:.3f}])" for name in order if name in at_last.index]
    return f"Generalization gap (validation loss - training loss) at epoch {last}: " + "; ".join(parts) + "."


def best_epoch_sentence(table: pd.DataFrame, order: list[str]) -> str:
    """Mean best epoch by validation accuracy per configuration."""
    rows = table[table["criterion"] == "by val_acc"].set_index(CONFIG)
    parts = [f"{name} at epoch {rows.loc[name, 'mean']:.1f} (95% CI [{rows.loc[name, 'ci_low']:.1f}, "
             f"{rows.loc[name, 'ci_high']:.1f}], best validation accuracy {rows.loc[name, 'mean_best_value']:.4f})"
             for name in order if name in rows.index]
    return "Best epoch by validation accuracy, mean over seeds: " + "; ".join(parts) + "."


def difference_figure(tests: pd.DataFrame, treatment: str, reference: str) -> MplFigure:
    """Per-epoch paired difference in validation accuracy with its 95% CI band."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.axhline(0, color="grey", lw=1, ls="--")
    ax.plot(tests["epoch"], 100 * tests["mean_diff"], color="C0", label="mean over seeds")
    ax.fill_between(tests["epoch"], 100 * tests["ci_low"], 100 * tests["ci_high"], color="C0", alpha=0.25,
                    label="95% t-interval")
    sig = tests[(tests["p_value"] < ALPHA)]
    ax.scatter(sig["epoch"], 100 * sig["mean_diff"], s=12, color="C3", zorder=3, label=f"paired t-test p < {ALPHA}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy difference [pp]")
    ax.set_title(f"{treatment} minus {reference}, paired on seeds", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def analyze(data: StudyData) -> Report:
    """Curves, gap, best epochs, where dropout starts to pay and the final test comparison."""
    report = Report()
    if data.runs.empty or data.curves.empty:
        return report
    runs = data.runs.assign(**{CONFIG: config_labels(data, data.runs).to_numpy()})
    treatment, reference = treatment_and_reference(data, runs)
    order = [treatment, reference] + sorted(set(runs[CONFIG]) - {treatment, reference})
    curves = finished_curves(data, runs)
    tests = per_epoch_tests(curves, treatment, reference)
    margin = data.spec.margin
    last = int(curves["epoch"].max())
    final = final_test_comparison(runs, treatment, reference, margin)
    best = best_epochs(curves)
    window = smoothing_window(last)
    smooth_tests = (per_epoch_tests(smoothed_curves(curves, window), treatment, reference) if window
                    else pd.DataFrame())
    early = (final_test_comparison(runs, treatment, reference, margin, BEST_METRIC)
             if has_best(runs) else None)
    if not tests.empty:
        windowed = window_test(curves, treatment, reference, margin)
        pays = paying_epoch(tests, smooth_tests, windowed)
        report.conclusions.append(answer_sentence(pays, last, final, early, treatment, reference, margin))
        report.conclusions.append(pays_sentence(tests, smooth_tests, windowed, treatment, reference, margin))
    if not smooth_tests.empty:
        report.conclusions.append(smoothed_pays_sentence(smooth_tests, treatment, reference, window))
    report.conclusions.append(fixed_budget_sentence(final, treatment, reference, last, margin))
    report.conclusions.append(early_stopping_sentence(runs, early, treatment, reference, margin))
    report.conclusions.append(best_epoch_sentence(best, order))
    report.conclusions.append(gap_sentence(curves, order))
    summary = summarize_over_seeds(runs, [CONFIG], "test_acc")
    if has_best(runs):
        summary = summary.merge(runs.groupby(CONFIG, as_index=False)[BEST_METRIC].mean()
                                .rename(columns={BEST_METRIC: "mean_best_test_acc"}), on=CONFIG)
    report.tables.append(Table("test_accuracy", summary, "Test accuracy per configuration over seeds: last epoch "
                                                         "(mean, std, n, 95% CI) and best-validation epoch mean"))
    report.tables.append(Table("best_epochs", best, "Best epoch per run by validation accuracy / loss: mean, std, "
                                                    "n and 95% t-interval over seeds, and the mean best value"))
    if not tests.empty:
        report.tables.append(Table("per_epoch_val_acc", tests, f"Validation accuracy, {treatment} minus {reference} "
                                   "per epoch, paired on seeds (paired t-test, Holm across epochs)"))
    if not smooth_tests.empty:
        report.tables.append(Table("per_epoch_val_acc_smoothed", smooth_tests,
                                   f"Validation accuracy averaged over the trailing {window} epochs, {treatment} "
                                   f"minus {reference}, paired on seeds (paired t-test, Holm across epochs)"))
    report.figures.append(Figure("curves", curves_figure(curves, order),
                                 "Training loss, validation loss and validation accuracy per epoch "
                                 "(mean, 95% CI band)"))
    report.figures.append(Figure("generalization_gap", gap_figure(curves, order),
                                 "Validation loss minus training loss per epoch (mean, 95% CI band)"))
    if not tests.empty:
        report.figures.append(Figure("val_acc_difference", difference_figure(tests, treatment, reference),
                                     "Validation accuracy difference per epoch, paired on seeds: mean, 95% CI band, "
                                     "epochs with p < 0.05"))
    if not smooth_tests.empty:
        report.figures.append(Figure("val_acc_difference_smoothed",
                                     difference_figure(smooth_tests, treatment, reference),
                                     f"The same difference for validation accuracy averaged over the trailing "
                                     f"{window} epochs: mean, 95% CI band, epochs with p < 0.05"))
    report.notes.append("train_loss is the mean loss of the epoch's training batches with dropout ON (and weights "
                        "still changing during the epoch), while val_loss is measured after the epoch with dropout "
                        "off: for the dropout runs the gap val_loss - train_loss is pulled down by the noise in the "
                        "training loss and can be negative, so it is not a pure measure of overfitting.")
    report.notes.append("'Dropout pays from epoch E on' requires the smoothed mean difference to be significantly "
                        "above 0 (paired t-test, p < 0.05) at every epoch from E to the last AND a significant paired "
                        "gain in each seed's mean validation accuracy over "
                        f"the last {min(LAST_WINDOW, last)} epochs; a single last point decides nothing. Tables longer "
                        "than 15 rows show an excerpt; their CSVs hold every row.")
    report.notes.append(SELECTION_NOTE)
    report.notes.append("'Significantly from epoch E on' requires the paired t-test (p < 0.05, dropout ahead) at every "
                        "epoch from E to the last: an intersection-union test, valid without correction; the Holm "
                        "version (across all epochs) is stricter and is reported alongside.")
    return report
