"""Exercise 4: why is dropout not used at test time? Deterministic, single noisy and Monte-Carlo evaluation.

Reads the store's ``test_time`` instrument table (see ``evaluation/mc_evaluation.py``): one ``deterministic`` row
(noise off), one ``single`` row (mean over max(T) single noisy passes; ``seconds`` per pass) and one
``mc`` row per T (softmax averaged over the first T passes; ``seconds`` of the T passes).
"""

from __future__ import annotations

import pandas as pd

from dropout_lab.analysis.stats import (
    EQUIVALENT,
    HIGHER,
    LOWER,
    difference_verdict,
    paired_differences,
    ratio_of_means,
    seed_flips,
    summarize_metrics,
    with_holm,
)
from dropout_lab.reports.analyses.instruments import instrument_rows
from dropout_lab.reports.analyses.test_time_figures import COMPARED, cost_plot, metrics_plot, row_of
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.plan_section import declared_verdicts
from dropout_lab.reports.report_parts import Figure, Report, Table
from dropout_lab.reports.wording import (
    ci_text,
    direction,
    holm_text,
    pct,
    ratio_ci,
    row_equivalence_text,
    seed_flip_text,
)

METRICS = ("accuracy", "nll", "ece", "entropy", "seconds")
MODE_ORDER = {"deterministic": 0, "single": 1, "mc": 2}
BASE = ("deterministic", 1)


def test_time_table(data: StudyData) -> pd.DataFrame:
    """Tidy test-time rows of every finished run with trial, seed and configuration."""
    return instrument_rows(data, "test_time")


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI over seeds of each metric per (configuration, mode, T)."""
    table = summarize_metrics(rows, ["configuration", "mode", "T"], METRICS)
    return table.sort_values(["configuration", "mode", "T"], key=lambda c: c.map(MODE_ORDER) if c.name == "mode"
                             else c).reset_index(drop=True)


def comparison_table(rows: pd.DataFrame, margin: float = 0.005) -> pd.DataFrame:
    """Single and MC (every T) minus deterministic for accuracy, NLL and ECE, paired on seeds; accuracy rows also
    get TOST within +-``margin``.

    Holm families: the MC rows of one configuration and metric (over T); the single-pass row is its own question
    and keeps its unadjusted p (``p_holm`` = ``p_value``).
    """
    parts = []
    for config, group in rows.groupby("configuration"):
        for metric in COMPARED:
            diffs = paired_differences(group, ["mode", "T"], metric, {"mode": BASE[0], "T": BASE[1]},
                                       margin=margin if metric == "accuracy" else None)
            diffs = diffs.assign(configuration=config, metric=metric)
            parts += [with_holm(family) for _, family in diffs.groupby("mode", sort=False)]
    table = pd.concat(parts, ignore_index=True)
    front = ["configuration", "metric", "mode", "T"]
    return table[[*front, *[c for c in table.columns if c not in front]]]


def cost_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Each noisy evaluation's time against the same runs' deterministic pass, per (configuration, mode, T): the
    ratio of the mean times over seeds (:func:`ratio_of_means`, not the mean of per-seed ratios) with its 95% CI
    from a paired bootstrap over seeds, in total (``time_ratio``) and per pass (``per_pass_ratio``: MC over T;
    ``single`` seconds are per pass already)."""
    det = rows[rows["mode"] == "deterministic"].set_index("trial")["seconds"]
    noisy = rows[rows["mode"] != "deterministic"].assign(deterministic_seconds=lambda f: f["trial"].map(det))
    out = []
    for (config, mode, T), group in noisy.dropna(subset=["seconds", "deterministic_seconds"]).groupby(
            ["configuration", "mode", "T"]):
        ratio = ratio_of_means(group["seconds"], group["deterministic_seconds"])
        passes = int(T) if mode == "mc" else 1
        out.append({"configuration": config, "mode": mode, "T": T, "n": ratio["n"],
                    "seconds_mean": group["seconds"].mean(),
                    "deterministic_seconds_mean": group["deterministic_seconds"].mean(),
                    "time_ratio": ratio["ratio"], "time_ratio_ci_low": ratio["ci_low"],
                    "time_ratio_ci_high": ratio["ci_high"], "per_pass_ratio": ratio["ratio"] / passes,
                    "per_pass_ratio_ci_low": ratio["ci_low"] / passes,
                    "per_pass_ratio_ci_high": ratio["ci_high"] / passes})
    return pd.DataFrame(out)


def mc_accuracy_verdict(row: pd.Series, margin: float) -> str:
    """What the paired test (Holm) and TOST say of MC(T) minus deterministic accuracy, in words."""
    word = difference_verdict(row)
    within = f"equivalent within ±{100 * margin:g} pp"
    if word in (HIGHER, LOWER):
        side = "better" if word == HIGHER else "worse"
        return f"significantly {side} yet {within}" if bool(row["equivalent"]) else f"significantly {side}"
    return within if word == EQUIVALENT else "inconclusive"


def mc_verdicts(comp: pd.DataFrame, config: str, margin: float) -> pd.DataFrame:
    """MC accuracy rows of ``config`` by T with their :func:`mc_accuracy_verdict` (``verdict``)."""
    mc = comp[(comp["configuration"] == config) & (comp["mode"] == "mc") & (comp["metric"] == "accuracy")]
    mc = mc.sort_values("T")
    return mc.assign(verdict=[mc_accuracy_verdict(r, margin) for _, r in mc.iterrows()])


def equivalent_from(verdicts: pd.DataFrame) -> int | None:
    """The smallest T from which MC is TOST-equivalent to the deterministic pass at every larger T (None if not)."""
    ok = verdicts["equivalent"].fillna(False).astype(bool).to_numpy()
    if not len(ok) or not ok[-1]:
        return None
    start = len(ok) - 1
    while start > 0 and ok[start - 1]:
        start -= 1
    return int(verdicts["T"].iloc[start])


def _mc_answer(verdicts: pd.DataFrame, margin: float) -> str:
    last = verdicts.iloc[-1]
    t = equivalent_from(verdicts)
    if t is not None:
        worse = [int(T) for T, v in zip(verdicts["T"], verdicts["verdict"]) if T >= t and v.startswith("significantly")]
        tail = f", though still significantly different at T = {', '.join(map(str, worse))}" if worse else ""
        return f"is equivalent to it within ±{100 * margin:g} pp from T = {t} (TOST, paired on seeds){tail}"
    if last["verdict"] == "inconclusive":
        return (f"is inconclusive at T = {int(last['T'])} (neither significantly different after Holm nor "
                f"equivalent within ±{100 * margin:g} pp)")
    return f"is still {last['verdict']} at T = {int(last['T'])} (paired t-test, Holm over T)"


def _accuracy_sentence(summary: pd.DataFrame, comp: pd.DataFrame, config: str) -> str:
    row = row_of(comp, config, "single", metric="accuracy")
    single, det = row_of(summary, config, "single"), row_of(summary, config, "deterministic")
    verb = direction(row, "raises", "lowers", "does not significantly change")
    return (f"A single stochastic pass {verb} test accuracy against the deterministic pass: {pct(row['mean_diff'])} "
            f"({single['accuracy_mean']:.4f} vs {det['accuracy_mean']:.4f}; {ci_text(row['ci_low'], row['ci_high'])}, "
            f"paired t-test over {int(row['n_pairs'])} seeds, {holm_text(row['p_holm'])}, "
            f"d_z = {row['cohens_dz']:.2f}).")


def _mc_sentence(comp: pd.DataFrame, config: str, margin: float) -> str:
    verdicts = mc_verdicts(comp, config, margin)
    groups: dict[str, list[str]] = {}
    for T, verdict in zip(verdicts["T"], verdicts["verdict"]):
        groups.setdefault(verdict, []).append(str(int(T)))
    parts = "; ".join(f"{verdict} at T = {', '.join(ts)}" for verdict, ts in groups.items())
    last = verdicts.iloc[-1]
    return (f"MC averaging minus the deterministic pass in test accuracy, paired on seeds (Holm over the T family, "
            f"TOST within ±{100 * margin:g} pp): {parts}; at T = {int(last['T'])} the paired difference is "
            f"{pct(last['mean_diff'])} ({ci_text(last['ci_low'], last['ci_high'])}, {holm_text(last['p_holm'])}; "
            f"{row_equivalence_text(last, margin)}).")


#: A test-time comparison against the deterministic pass: (metric, mode, T), T None for the single pass.
RowKey = tuple[str, str, int | None]


def declared_rows(data: StudyData, rows: pd.DataFrame) -> dict[RowKey, pd.Series]:
    """The declared plan's verdict rows (:func:`declared_verdicts`) of ``test_time`` comparisons against the
    deterministic pass, by (metric, mode, T): those the plan decides, or leaves undecided, for this study.

    A comparison counts when it reads ``test_time.<metric>``, its control is ``{mode: deterministic}`` and its
    treatment only a mode (with T for MC); with several configurations such a row pools them, so none counts.
    """
    plan = data.spec.plan
    if plan is None or rows["configuration"].nunique() != 1:
        return {}
    verdicts = {row["comparison"]: row for _, row in declared_verdicts(data).iterrows()}
    out: dict[RowKey, pd.Series] = {}
    for c in plan.comparisons:
        metric = (c.metric or "").removeprefix("test_time.")
        if (c.metric != f"test_time.{metric}" or dict(c.control) != {"mode": BASE[0]} or c.name not in verdicts
                or not set(c.treatment) <= {"mode", "T"}):
            continue
        T = c.treatment.get("T")
        out[(metric, str(c.treatment.get("mode")), None if T is None else int(T))] = verdicts[c.name]
    return out


def _score_verdict(metric: str, row: pd.Series) -> str:
    """A declared verdict on a lower-is-better score in words: 'higher (worse)' for NLL, 'lower (better calibrated)'
    for ECE, else the verdict itself (equivalent, undecided)."""
    side = {LOWER: "better", HIGHER: "worse"}.get(str(row["verdict"]))
    if side is None:
        return str(row["verdict"])
    return f"{row['verdict']} ({side}{' calibrated' if metric == 'ece' else ''})"


def _declared_text(metric: str, row: pd.Series) -> str:
    within = f" within ±{row['margin']:g}" if row["verdict"] == EQUIVALENT else ""
    return (f"by the declared plan ({row['comparison']}) **{_score_verdict(metric, row)}{within}**: "
            f"{row['mean_diff']:+.4f}, 95% CS [{row['cs_low']:+.4f}, {row['cs_high']:+.4f}] over "
            f"{int(row['n_pairs'])} paired seeds")


def _calibration_sentence(summary: pd.DataFrame, comp: pd.DataFrame, config: str, mode: str,
                          declared: dict[RowKey, pd.Series], T: int | None = None) -> str:
    """NLL and ECE of ``mode`` against the deterministic pass: for a row of the declared plan, its verdict (the only
    place a sentence may say better or worse calibrated); otherwise a labelled exploratory description."""
    det, ours = row_of(summary, config, "deterministic"), row_of(summary, config, mode, T)
    name = f"MC averaging at T = {T}" if mode == "mc" else "a single stochastic pass"
    parts = []
    for metric in ("nll", "ece"):
        levels = f"{metric.upper()} {ours[f'{metric}_mean']:.4f} vs {det[f'{metric}_mean']:.4f}"
        row = declared.get((metric, mode, T if mode == "mc" else None))
        if row is not None:
            parts.append(f"{levels}, {_declared_text(metric, row)}")
            continue
        diff = row_of(comp, config, mode, T, metric)
        parts.append(f"{levels}, a difference of {diff['mean_diff']:+.4f} with 95% CI [{diff['ci_low']:+.4f}, "
                     f"{diff['ci_high']:+.4f}] over {int(diff['n_pairs'])} paired seeds, not part of the declared "
                     "plan (exploratory, no verdict)")
    return f"{name[0].upper() + name[1:]} vs deterministic: " + "; ".join(parts) + "."


def calibration_answer(declared: dict[RowKey, pd.Series]) -> str:
    """The answer's words on NLL and calibration: the declared plan's verdicts on them only, or that it has none."""
    said = [f"“{row['comparison']}” {_score_verdict(metric, row)}" for (metric, _, _), row in declared.items()
            if metric in ("nll", "ece")]
    if not said:
        return "NLL and calibration get no verdict of a declared plan here (see the exploratory descriptions)"
    return "by the declared plan: " + ", ".join(said)


def _cost_sentence(cost: pd.DataFrame, config: str, t_max: int) -> str:
    mc, single = row_of(cost, config, "mc", t_max), row_of(cost, config, "single")
    per_pass = cost[(cost["configuration"] == config) & (cost["mode"] == "mc")]["per_pass_ratio"]
    return (f"Cost: MC with T = {t_max} passes took {mc['time_ratio']:.1f}x the deterministic pass's time (the ratio "
            f"of the mean times, {mc['seconds_mean']:.3g} s vs {mc['deterministic_seconds_mean']:.3g} s over "
            f"{int(mc['n'])} seeds; {ratio_ci(mc['time_ratio_ci_low'], mc['time_ratio_ci_high'])}, paired bootstrap "
            f"over seeds), i.e. {mc['per_pass_ratio']:.2f}x per pass; one stochastic pass costs "
            f"{single['time_ratio']:.2f}x a deterministic one "
            f"({ratio_ci(single['time_ratio_ci_low'], single['time_ratio_ci_high'])}); the per-pass ratio of MC "
            f"ranges {per_pass.min():.2f}-{per_pass.max():.2f} across T.")


def noisy_configuration(comp: pd.DataFrame) -> str:
    """The configuration whose single passes differ most from its deterministic pass (the one the answer is about)."""
    acc = comp[(comp["mode"] == "single") & (comp["metric"] == "accuracy")]
    return str(acc.loc[acc["mean_diff"].abs().idxmax(), "configuration"])


def _answer(summary: pd.DataFrame, comp: pd.DataFrame, cost: pd.DataFrame, config: str, t_max: int,
            margin: float, declared: dict[RowKey, pd.Series]) -> str:
    row = row_of(comp, config, "single", metric="accuracy")
    det = row_of(summary, config, "deterministic")["accuracy_mean"]
    verb = direction(row, "gains", "loses", "does not significantly change")
    if verb == "does not significantly change":
        single = (f"a single noisy pass does not significantly change test accuracy ({pct(row['mean_diff'])}, "
                  f"Holm-adjusted p = {row['p_holm']:.3g}; {row_equivalence_text(row, margin)})")
    else:
        single = (f"a single noisy pass {verb} {pct(abs(row['mean_diff']))} test accuracy "
                  f"(Holm-adjusted p = {row['p_holm']:.3g})")
    mc = row_of(cost, config, "mc", t_max)
    return (f"Against the deterministic pass (test accuracy {det:.4f}), {single}; MC averaging "
            f"{_mc_answer(mc_verdicts(comp, config, margin), margin)}; {calibration_answer(declared)}; and T = {t_max} "
            f"passes cost {mc['time_ratio']:.1f}x the time (the ratio of the mean times, "
            f"{ratio_ci(mc['time_ratio_ci_low'], mc['time_ratio_ci_high'])}).")


def accuracy_verdicts(rows: pd.DataFrame, config: str, margin: float) -> str:
    """The answer's two accuracy verdicts in one string: the single pass against the deterministic pass, and the
    smallest T from which MC is equivalent to it (:func:`equivalent_from`)."""
    comp = comparison_table(rows, margin)
    single = difference_verdict(row_of(comp, config, "single", metric="accuracy"))
    mc = mc_verdicts(comp, config, margin)
    t = equivalent_from(mc)
    reach = f"MC equivalent from T = {t}" if t is not None else f"MC not equivalent at T = {int(mc['T'].max())}"
    return f"single pass {single}; {reach}"


def seed_robustness(rows: pd.DataFrame, config: str, margin: float) -> str | None:
    """A sentence naming any single seed whose omission changes an accuracy verdict of ``config`` (else None)."""
    ours = rows[rows["configuration"] == config]

    def verdict(frame: pd.DataFrame) -> str:
        return accuracy_verdicts(frame, config, margin)

    return seed_flip_text(seed_flips(ours, verdict, seed="seed"), verdict(ours))


def analyze(data: StudyData) -> Report:
    """Deterministic vs single noisy vs MC-averaged evaluation: accuracy, NLL, ECE and cost against T."""
    report = Report()
    rows = test_time_table(data) if not data.runs.empty else pd.DataFrame()
    if rows.empty:
        report.notes.append("No finished run recorded test-time evaluations (test_time.enabled=true).")
        return report
    margin = data.spec.margin
    summary, comp, cost = summary_table(rows), comparison_table(rows, margin), cost_table(rows)
    declared = declared_rows(data, rows)
    t_max = int(rows.loc[rows["mode"] == "mc", "T"].max())
    report.tables.append(Table("test_time_summary", summary,
                               "Test metrics and seconds per configuration, mode and T: mean over seeds with 95% "
                               "t-interval (single: mean over max(T) single passes per run; seconds per pass)"))
    report.tables.append(Table("vs_deterministic", comp,
                               "Single passes and MC at every T minus the deterministic pass, paired on seeds "
                               "(paired t-test, Cohen's d_z), Holm over T within each configuration and metric "
                               f"(the single pass is its own family); accuracy rows: TOST within ±{100 * margin:g} pp"))
    report.tables.append(Table("cost", cost,
                               "Evaluation time against the deterministic pass: the ratio of the mean times over "
                               "seeds (not the mean of per-seed ratios), in total and per pass, with 95% CIs from a "
                               "paired bootstrap over seeds"))
    report.figures.append(Figure("metrics_vs_T", metrics_plot(rows, summary),
                                 "Accuracy, NLL and ECE against T: MC averaging (line, 95% t-interval band over "
                                 "seeds), deterministic pass (dashed, 95% t-interval band), single noisy pass "
                                 "(square, 95% CI)"))
    report.figures.append(Figure("cost_vs_T", cost_plot(rows, summary),
                                 "Seconds to evaluate the test split against T (mean, 95% t-interval band), "
                                 "deterministic pass (dashed) and T times its time (dotted)"))
    configs = sorted(rows["configuration"].unique())
    report.conclusions.append(_answer(summary, comp, cost, noisy_configuration(comp), t_max, margin, declared))
    for config in configs:
        prefix = f"{config}: " if len(configs) > 1 else ""
        if (comp.loc[comp["configuration"] == config, "mean_diff"] == 0).all():
            det = row_of(summary, config, "deterministic")
            report.conclusions.append(f"{prefix}no test-time noise: every single and MC pass equals the deterministic "
                                      f"pass (test accuracy {det['accuracy_mean']:.4f}).")
            continue
        for sentence in (_accuracy_sentence(summary, comp, config), _mc_sentence(comp, config, margin),
                         _calibration_sentence(summary, comp, config, "mc", declared, t_max),
                         _calibration_sentence(summary, comp, config, "single", declared),
                         _cost_sentence(cost, config, t_max)):
            report.conclusions.append(prefix + sentence)
        if flip := seed_robustness(rows, config, margin):
            report.conclusions.append(prefix + flip)
    report.notes.append("Noisy passes run the network in train mode under no_grad with a seeded, forked RNG; "
                        "MC rows reuse the first T of the same max(T) passes as the single-pass row.")
    report.notes.append("Calibration (NLL, ECE) is called better or worse only where the study's declared plan "
                        "decides it; a row the plan does not declare is described with its interval, not judged.")
    report.notes.append("MC against deterministic is judged by the paired test of each run's MC(T) minus its own "
                        "deterministic accuracy (Holm over T) and TOST, not by overlapping between-seed intervals. "
                        "Selection: every run is evaluated at its last epoch.")
    return report
