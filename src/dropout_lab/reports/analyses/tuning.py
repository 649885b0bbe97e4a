"""A tuning study: best parameters, optimization history, pruning and parameter importances."""

from __future__ import annotations

import matplotlib.pyplot as plt
import optuna
import pandas as pd
import seaborn as sns

from dropout_lab.config.samplers import MEDIAN_WARMUP_EPOCHS, TPE_STARTUP_TRIALS
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.report_parts import Figure, Report, Table


def _history(trials: pd.DataFrame, maximize: bool, objective: str) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4))
    done = trials.dropna(subset=["value"]).sort_values("trial")
    sns.scatterplot(data=done, x="trial", y="value", hue="state", ax=ax)
    best = done["value"].cummax() if maximize else done["value"].cummin()
    ax.plot(done["trial"], best, color="black", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{objective} (pruned: last reported)")
    ax.legend()
    fig.tight_layout()
    return Figure("optimization_history", fig,
                  f"Objective ({objective}) per trial (pruned trials at their last report) and best so far")


def design_caveats(sampler: str, pruner: str, n_trials: int, trials: pd.DataFrame) -> list[str]:
    """What the sampler and pruner settings imply for this study's trials (computed, not typed in)."""
    notes = []
    if sampler == "tpe" and n_trials <= TPE_STARTUP_TRIALS:  # extra trials of parallel workers start earlier still
        notes.append(f"The budget of {n_trials} trials lies within TPE's {TPE_STARTUP_TRIALS} random start-up "
                     f"trials (all {len(trials)} trials here were sampled at random), so this tuning was a seeded "
                     "random search: studies with the same seed and search-space shape "
                     "drew their candidates at the same relative positions of their ranges (the same budget and "
                     "a fair comparison, but no model-based search). More trials than that would let TPE act.")
    pruned = trials[trials["state"] == "PRUNED"]
    if pruner == "median" and MEDIAN_WARMUP_EPOCHS == 0 and len(pruned):
        first = int((pruned["epochs_run"] <= 1).sum())
        notes.append(f"The median pruner compares from the first epoch (no warm-up): {first} of the {len(pruned)} "
                     "pruned trials were stopped after epoch 1, where a slow starter is not yet told from a bad "
                     "configuration.")
    return notes


def near_ties(complete: pd.DataFrame, best: float, margin: float, seeds: int = 1) -> str:
    """The runner-up's gap and how many complete trials lie within ``margin`` of the best: the tuning seeds cannot
    rank those."""
    gaps = (complete["value"] - best).abs().sort_values()
    close = int((gaps <= margin).sum()) - 1
    runner_up = f"the runner-up is {100 * gaps.iloc[1]:.2f} pp away; " if len(gaps) > 1 else ""
    used = "one seed" if seeds == 1 else f"the mean of {seeds} seeds per trial"
    return (f"Of the other complete trials, {runner_up}{close} lie within ±{100 * margin:g} pp of the best (the "
            f"study's smallest effect of interest). Tuning used {used}, so the ranking is confirmed only by the "
            "final comparison on fresh seeds.")


def trials_table(data: StudyData) -> pd.DataFrame:
    """Every finished trial, one row each (a trial of several seeds has a run-table row per seed): trial, state,
    the tuned params, value (the mean over its seeds; a pruned trial's last reported one), epochs run, seeds."""
    runs = data.all_runs
    params = [k for k in sorted(data.spec.search_space) if k in runs]
    trials = runs.groupby("trial", sort=True).agg(
        state=("state", "first"), **{k: (k, "first") for k in params}, value=("last_reported_value", "first"),
        epochs_run=("epochs_run", "max"), seeds=("seed", "count"))
    return trials.reset_index()


def analyze(data: StudyData) -> Report:
    """Summarize what the tuner found on the validation split."""
    report = Report()
    if data.runs.empty or data.runs["value"].isna().all():
        return report
    trials = trials_table(data)
    maximize = data.spec.direction == "maximize"
    objective = data.spec.objective
    seeds = int(trials["seeds"].max())
    averaged = f", the mean over {seeds} seeds" if seeds > 1 else ""
    report.tables.append(Table("trials", trials.sort_values("value", ascending=not maximize),
                               f"Every finished trial, best first ({objective} on the validation split{averaged})"))
    report.figures.append(_history(trials, maximize, objective))
    complete = trials[trials["state"] == "COMPLETE"].dropna(subset=["value"])
    best = complete["value"].idxmax() if maximize else complete["value"].idxmin()
    states = trials["state"].value_counts()
    tuned = {k: trials.at[best, k] for k in trials.columns if k in data.spec.search_space}
    params = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in tuned.items())
    mean = f" (the mean over {seeds} seeds)" if seeds > 1 else ""
    report.conclusions.append(f"Best {objective} {trials.at[best, 'value']:.4f}{mean} at {params} "
                              f"(trial {trials.at[best, 'trial']}), after {len(trials)} trials: "
                              f"{states.get('COMPLETE', 0)} complete, {states.get('PRUNED', 0)} pruned, "
                              f"{states.get('FAIL', 0)} failed.")
    report.conclusions.append(near_ties(complete, trials.at[best, "value"], data.spec.margin, seeds))
    try:  # Optuna's default importance evaluator (PED-ANOVA in Optuna 5) reads the trials' distributions
        importances = optuna.importance.get_param_importances(data.study) if data.study is not None else {}
    except (RuntimeError, ValueError):  # too few complete trials to fit the importance model
        importances = {}
    if importances:  # ties (often 0.0) in name order: the evaluator's own order of ties varies from run to run
        ordered = sorted(importances.items(), key=lambda item: (-item[1], item[0]))
        table = pd.DataFrame(ordered, columns=["param", "importance"])
        report.tables.append(Table("importances", table, "Parameter importances (Optuna's default evaluator, "
                                                         "PED-ANOVA)"))
        top = table.iloc[0]
        report.conclusions.append(f"The most important parameter is {top['param']} "
                                  f"(importance {top['importance']:.2f}).")
    report.notes.append("Tuning uses the validation split only; "
                        "the test set is used in the final comparison (ex7_noise).")
    assert data.spec.n_trials is not None  # the spec check requires n_trials for a tuning study
    report.notes.extend(design_caveats(data.spec.sampler, data.spec.pruner, data.spec.n_trials, trials))
    return report
