"""Training cost per epoch of DropConnect vs. dropout (exercise 6), interleaved in one process.

The study ``ex6_dropconnect`` cannot answer what DropConnect costs: it trains in fused populations, where
a run's seconds are an equal share of its population's wall time. This benchmark times the study's own
cells instead, built from its definition (``load_spec`` + ``run_overrides``: the chapter's MLP 784-256-256-10,
batch 256, SGD lr 0.1, ``model.dropout_2`` tied to ``model.dropout_1``, the study's rates and first seed):

  per-run           ``train()`` of one run on its own network (``training/fit.py``)
  population        ``train_population`` of ``--population`` K runs of the same cell (seeds seed..seed+K-1)
                    in ``--population-precision`` (default bf16, as ``make studies`` trains), per member:
                    the population's seconds / K (``--population 0``: skipped)

Every repetition runs each (engine, technique, rate) cell once, for ``--warmup`` + ``--epochs`` epochs,
with ``--threads`` torch threads. The cells alternate: even repetitions run them in order, odd ones in
reverse, so at each rate the two techniques run back to back as AB, BA, AB, ... (ABBA blocks) and load
drift hits both alike. Per epoch, *training s* is the time from the epoch's start to its validation's start
(the optimizer steps) and *epoch s* is ``curves[].seconds`` (training + validation, noise off).

Analysis (``dropout_lab.analysis.stats``): per engine and rate, DropConnect's over dropout's seconds of the
timed epochs (mean per cell and repetition), paired on repetition: geometric-mean ratio, 95% CI and p from
a paired t-test on log seconds, Holm over the engine x rate rows. *of peak*: the matmul work of a training
epoch (1.61 MFLOP per image) per second, as a fraction of the matmul peak measured here at the chapter's
shape with the same threads. Writes the per-epoch rows to ``--csv`` and its section to ``--readme`` when given
(else to stdout).

Ends with one line: ``dropconnect_cost_ratio=<r> ci_low=<l> ci_high=<h> p_holm=<p> rate=<rate>`` (per-run,
at the chapter's rate), plus ``population_cost_ratio=<r>`` when populations were timed.

    python benchmarks/bench_dropconnect.py --readme benchmarks/README.md      # ~6 min on 2 cores, writes its section
    python benchmarks/bench_dropconnect.py --repeats 2 --epochs 1 --train-subset 2000 --population 2 \\
        --csv /tmp/x.csv                                                       # prints the section only
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_population import forward_flops, matmul_peak  # noqa: E402 - needs HERE on sys.path
from bench_train import add_readme_option, load_average, machine_info, publish_section  # noqa: E402

if TYPE_CHECKING:
    from dropout_lab.config.study_spec import StudySpec

BEGIN, END = "<!-- bench_dropconnect:begin -->", "<!-- bench_dropconnect:end -->"
STUDY = "ex6_dropconnect"
TECHNIQUE, RATE, REFERENCE = "noise", "model.dropout_1", "dropout"
PER_RUN = "per-run"
CSV = HERE / "results" / "dropconnect_cost.csv"


class TrainingSeconds(L.Callback):
    """Seconds of each epoch's training part: from the epoch's start to its validation's start (or its end)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def _stop(self) -> None:
        if self._start is not None:
            self.seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop()


def cells(engines: list[str], techniques: list[str], rates: list[float]) -> list[tuple[str, str, float]]:
    """Every (engine, technique, rate), the techniques adjacent at each rate."""
    return [(e, t, r) for e in engines for r in rates for t in techniques]


def run_cell(args: argparse.Namespace, spec: StudySpec, cell: tuple[str, str, float], root: str) -> pd.DataFrame:
    """One cell's epochs: training and epoch seconds per run (per member for a population)."""
    from dropout_lab.config.compose import compose_train_config
    from dropout_lab.config.study_grid import run_overrides
    from dropout_lab.training.fit import RunSpec, train, train_population

    engine, technique, rate = cell
    members = 1 if engine == PER_RUN else args.population
    bench = ["trainer=cpu", f"threads={args.threads}", "optuna.record=false", f"data.root={args.data_root}",
             f"results_dir={root}", *([f"data.train_subset={args.train_subset}"] if args.train_subset else [])]
    overrides = [[*run_overrides(spec, {TECHNIQUE: technique, RATE: rate, "seed": args.seed + i}), *bench]
                 for i in range(members)]
    timer = TrainingSeconds()
    if engine == PER_RUN:
        with tempfile.TemporaryDirectory(dir=root) as out:
            curves = train(compose_train_config(overrides[0]), out, overrides[0], callbacks=[timer]).curves
    else:
        with tempfile.TemporaryDirectory(dir=root) as out:
            runs = [RunSpec(compose_train_config(o), Path(out) / str(i)) for i, o in enumerate(overrides)]
            results = train_population(runs, args.population_precision, callbacks=[timer])
        curves = results[0].curves  # every member's seconds are the same share
    return pd.DataFrame({"epoch": range(1, len(curves) + 1), "train_s": [s / members for s in timer.seconds],
                         "epoch_s": [c["seconds"] for c in curves]})


def measure(args: argparse.Namespace, spec: StudySpec, order: list[tuple[str, str, float]]) -> pd.DataFrame:
    """The tidy per-epoch rows of every repetition, cells alternating forward and backward."""
    frames = []
    with tempfile.TemporaryDirectory(prefix="bench_dropconnect_") as root:
        for rep in range(args.repeats):
            for position, cell in enumerate(order if rep % 2 == 0 else order[::-1]):
                rows = run_cell(args, spec, cell, root).assign(
                    rep=rep, position=position, engine=cell[0], **{TECHNIQUE: cell[1]}, rate=cell[2])
                rows["warmup"] = rows["epoch"] <= args.warmup
                frames.append(rows)
                timed = rows[~rows["warmup"]]
                print(f"  rep {rep + 1} {cell[0]} {cell[1]} rate {cell[2]}: training {timed['train_s'].mean():.3f} s, "
                      f"epoch {timed['epoch_s'].mean():.3f} s per epoch", flush=True)
    columns = ["rep", "position", "engine", TECHNIQUE, "rate", "epoch", "warmup", "train_s", "epoch_s"]
    return pd.concat(frames, ignore_index=True)[columns]


def cost_ratios(rows: pd.DataFrame, measure: str) -> pd.DataFrame:
    """DropConnect over dropout per engine and rate, paired on repetition (geometric mean, 95% CI, Holm)."""
    from dropout_lab.analysis.stats import paired_log_ratios, with_holm

    per_rep = rows[~rows["warmup"]].groupby(["engine", TECHNIQUE, "rate", "rep"], as_index=False)[measure].mean()
    parts = [paired_log_ratios(group, [TECHNIQUE], measure, {TECHNIQUE: REFERENCE}, pair="rep")
             .assign(engine=engine, rate=rate)
             for (engine, rate), group in per_rep.groupby(["engine", "rate"], sort=False)]
    return with_holm(pd.concat(parts, ignore_index=True))


def main_rate(spec: StudySpec, rates: list[float]) -> float:
    """The chapter's rate (the study's experiment's ``model.dropout_1``) when timed, else the first rate."""
    from dropout_lab.config.compose import compose_train_config

    chapter = float(compose_train_config([f"experiment={spec.experiment}"]).model.dropout_1)
    return chapter if chapter in rates else rates[0]


def table(rows: pd.DataFrame, ratios: pd.DataFrame, peaks: dict[str, float], n_train: int) -> list[str]:
    """The README table: seconds per technique, the ratio with its CI and Holm p, fraction of the matmul peak."""
    timed = rows[~rows["warmup"]]
    means = timed.groupby(["engine", "rate", TECHNIQUE])[["train_s", "epoch_s"]].mean()
    flops = 3 * forward_flops() * n_train
    lines = ["| engine | rate | technique | training s | epoch s | of peak | DropConnect / dropout, training "
             "| 95% CI | Holm p | epoch ratio |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for (engine, rate), r in ratios.set_index(["engine", "rate"]).iterrows():
        for technique in (REFERENCE, r[TECHNIQUE]):
            m = means.loc[(engine, rate, technique)]
            peak = peaks["bf16" if engine.endswith("bf16)") else "fp32"]
            first = technique == REFERENCE
            lines.append(f"| {engine} | {rate} | {technique} | {m['train_s']:.3f} | {m['epoch_s']:.3f} | "
                         f"{flops / m['train_s'] / peak:.0%} | "
                         + ("| | | |" if first else f"**{r['ratio']:.3f}** | "
                            f"[{r['ratio_ci_low']:.3f}, {r['ratio_ci_high']:.3f}] | {r['p_holm']:.2g} | "
                            f"{r['epoch_ratio']:.3f} |"))
    return lines


def ratio_text(row: pd.Series) -> str:
    """'95% CI [a, b], Holm p = c' of a ratio row."""
    from dropout_lab.reports.wording import ratio_ci

    return f"{ratio_ci(row['ratio_ci_low'], row['ratio_ci_high'])}, Holm p = {row['p_holm']:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per cell and repetition")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs before them, per cell and repetition")
    parser.add_argument("--repeats", type=int, default=6, help="repetitions (the pairs of the paired test)")
    parser.add_argument("--train-subset", type=int, default=None, help="first N training images (default: all 50k)")
    parser.add_argument("--rates", type=float, nargs="+", default=None,
                        help=f"model.dropout_1 values (default: {STUDY}'s grid)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a study worker's with --jobs 2)")
    parser.add_argument("--population", type=int, default=8,
                        help="members of the timed populations (default: auto's K on the CPU; 0: per-run only)")
    parser.add_argument("--population-precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--data-root", default=os.environ.get("DROPOUT_LAB_DATA", "/usr/share/datasets/fashion-mnist"))
    add_readme_option(parser)
    parser.add_argument("--csv", type=Path, default=CSV, help="where the per-epoch rows go")
    args = parser.parse_args()

    import torch

    from dropout_lab.config.engine import engine_name
    from dropout_lab.config.study_spec import load_spec

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    torch.set_num_threads(args.threads)
    spec = load_spec(STUDY, [f"epochs={args.warmup + args.epochs}"])
    args.seed = spec.seed_list[0]
    rates = args.rates or [float(r) for r in spec.grid[RATE]]
    engines = [PER_RUN] + ([engine_name(args.population, args.population_precision)] if args.population else [])
    info, load_start, started = machine_info(), load_average(), dt.datetime.now(dt.UTC)
    print(f"bench_dropconnect: {spec.grid[TECHNIQUE]} x rates {rates} x {engines}, {args.warmup} + {args.epochs} "
          f"epoch(s) on {args.train_subset or 'all 50k'} images, {args.repeats} repetition(s), {args.threads} "
          f"thread(s); load average {load_start}", flush=True)
    peaks = {p: matmul_peak(p, (256, 784, 256), args.threads) for p in ("fp32", args.population_precision)}
    rows = measure(args, spec, cells(engines, list(spec.grid[TECHNIQUE]), rates))
    load_end = load_average()
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(args.csv, index=False)
    ratios = cost_ratios(rows, "train_s").assign(epoch_ratio=cost_ratios(rows, "epoch_s")["ratio"])
    for _, r in ratios.iterrows():
        print(f"ratio {r['engine']} rate {r['rate']}: dropconnect/dropout training {r['ratio']:.3f} (95% CI "
              f"[{r['ratio_ci_low']:.3f}, {r['ratio_ci_high']:.3f}], Holm p = {r['p_holm']:.2g}, {r['n_pairs']} "
              f"pairs), epoch {r['epoch_ratio']:.3f}")

    rate = main_rate(spec, rates)
    head = ratios[(ratios["engine"] == PER_RUN) & (ratios["rate"] == rate)].iloc[0]
    population = ratios[(ratios["engine"] != PER_RUN) & (ratios["rate"] == rate)]
    csv = os.path.relpath(args.csv, (args.readme or HERE / "README.md").parent)  # the link from the README
    peak_text = ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items())
    lines = [
        "## DropConnect vs. dropout: training cost per epoch (exercise 6)",
        "",
        f"Generated by `python benchmarks/bench_dropconnect.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` "
        f"on {started:%Y-%m-%d %H:%M} UTC. Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
        f"{args.threads} torch thread(s). Load average (1/5/15 min) at start {load_start}, at end {load_end}.",
        "",
        f"`{STUDY}`'s cells (`{TECHNIQUE}` x `{RATE}` = `model.dropout_2`, seed {args.seed}; chapter MLP, batch "
        f"256, SGD lr 0.1; `{TECHNIQUE}={REFERENCE}` is the chapter's `dropout_layer`) on "
        f"{args.train_subset or 'all 50k'} training images: {args.warmup} warm-up + "
        f"{args.epochs} timed epoch(s) per cell, {args.repeats} repetitions in one process, the cells in ABBA "
        "order (forward, then backward). Seconds are means over the timed epochs and repetitions; a "
        f"population's are per member (its seconds / K). Ratio: geometric mean over repetitions, 95% CI and "
        "Holm-adjusted p of a paired t-test on log seconds (`dropout_lab.analysis.stats`). *of peak*: training "
        f"matmul FLOP/s over the matmul peak at the chapter's shape ({peak_text}, "
        f"{args.threads} thread(s)). Per-epoch rows: [`{csv}`]({csv}).",
        "",
        *table(rows, ratios, peaks, args.train_subset or 50_000),
        "",
        f"**DropConnect / dropout at rate {rate}, per-run: {head['ratio']:.3f}x the training time per epoch** "
        f"({ratio_text(head)})"
        + "".join(f"; in a {r['engine']}: {r['ratio']:.3f}x ({ratio_text(r)})" for _, r in population.iterrows())
        + ".",
    ]
    publish_section(args.readme, BEGIN, END, "\n".join(lines))
    print(f"wrote {args.csv}; load average: start {load_start}, end {load_end}")
    print(f"dropconnect_cost_ratio={head['ratio']:.4f} ci_low={head['ratio_ci_low']:.4f} "
          f"ci_high={head['ratio_ci_high']:.4f} p_holm={head['p_holm']:.3g} rate={rate}"
          + "".join(f" population_cost_ratio={r['ratio']:.4f}" for _, r in population.iterrows()))


if __name__ == "__main__":
    main()
