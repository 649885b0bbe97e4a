"""Sweep throughput: 1 vs 2 local workers on a 16-run grid, tuning with pruning on vs off, RSS per worker.

  (i)   a 16-run grid study (``experiment=chapter``, ``--grid-epochs`` epochs, ``model.dropout_1`` x 4
        values x 4 seeds) with ``dropout-lab study run SPEC --jobs 1`` and ``--jobs 2``, each in a fresh
        results folder (its own SQLite store) under a temporary directory: runs per hour and speedup;
  (ii)  a tuning study (TPE over ``model.dropout_1``, ``model.dropout_2`` and log ``optim.lr``,
        ``--tune-trials`` trials of ``--tune-epochs`` epochs) with ``pruner: median`` vs ``pruner: none``
        at equal trial count: wall time, pruned trials, epochs trained, best validation accuracy;
  (iii) RSS growth over several runs in one process (what a study worker does): the in-memory data
        set is read once per process (``load_tensors`` is cached), so RSS must not grow per run.

While (i) and (ii) run, the peak RSS (``VmHWM``) of every process below ``study run`` is sampled
from ``/proc`` every 0.2 s, which gives the peak RSS per worker. The configurations alternate
((i) 1 job, (i) 2 jobs, (ii) median, (ii) none, then again) over ``--repeats`` repetitions; medians.

    # full budget (about 10 minutes on 2 cores), writes its section of benchmarks/README.md:
    python benchmarks/bench_sweep.py --readme benchmarks/README.md
    python benchmarks/bench_sweep.py --grid-epochs 1 --tune-trials 4 --tune-epochs 2 --repeats 1   # prints it only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_train import (  # noqa: E402 - needs HERE on sys.path
    PeriodicSampler,
    _vm_kib,
    add_readme_option,
    load_average,
    machine_info,
    publish_section,
)

BEGIN, END = "<!-- bench_sweep:begin -->", "<!-- bench_sweep:end -->"
DROPOUT_1 = [0.2, 0.35, 0.5, 0.65]
SEEDS = [0, 1, 2, 3]


class TreePeaks(PeriodicSampler):
    """Samples the peak RSS (``VmHWM``) of a process and all its descendants every 0.2 s."""

    interval = 0.2

    def __init__(self, root_pid: int) -> None:
        super().__init__()
        self.root_pid = root_pid
        self.peaks: dict[int, dict] = {}

    @staticmethod
    def _parents() -> dict[int, int]:
        out = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(f"/proc/{entry.name}/stat").read_text()
                    out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        return out

    def _tree(self) -> list[int]:
        parents = self._parents()
        tree, frontier = [self.root_pid], [self.root_pid]
        while frontier:
            frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
            tree += frontier
        return tree

    def sample(self) -> None:
        for pid in self._tree():
            hwm = _vm_kib(pid, "VmHWM")
            if not hwm:
                continue
            entry = self.peaks.setdefault(pid, {"peak_kib": 0, "cmd": ""})
            entry["peak_kib"] = max(entry["peak_kib"], hwm)
            if not entry["cmd"]:
                try:
                    entry["cmd"] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    pass

    def worker_peaks_mib(self) -> list[float]:
        """Peak RSS of the processes that trained runs (they import torch: > 400 MiB), in MiB."""
        return sorted(e["peak_kib"] / 1024 for pid, e in self.peaks.items()
                      if pid != self.root_pid and e["peak_kib"] > 400 * 1024
                      and "python" in e["cmd"] and "-m dropout_lab.cli study" not in e["cmd"])


def _subset(train_subset: int | None) -> str:
    return f"overrides: [data.train_subset={train_subset}]\n" if train_subset else ""


def grid_spec(epochs: int, seeds: list[int], train_subset: int | None = None) -> str:
    return (
        "name: bench_grid\n"
        "question: Sweep throughput benchmark (benchmarks/bench_sweep.py).\n"
        "experiment: chapter\n"
        f"{_subset(train_subset)}"
        f"epochs: {epochs}\n"
        f"grid:\n  model.dropout_1: {DROPOUT_1}\n"
        f"seeds: {seeds}\n"
    )


def tune_spec(name: str, pruner: str, trials: int, epochs: int, train_subset: int | None = None) -> str:
    return (
        f"name: {name}\n"
        "question: Pruning benchmark (benchmarks/bench_sweep.py).\n"
        "experiment: chapter\n"
        f"{_subset(train_subset)}"
        f"epochs: {epochs}\n"
        "search_space:\n"
        "  model.dropout_1: {type: float, low: 0.0, high: 0.9}\n"
        "  model.dropout_2: {type: float, low: 0.0, high: 0.9}\n"
        "  optim.lr: {type: float, low: 0.01, high: 1.0, log: true}\n"
        f"n_trials: {trials}\n"
        "sampler: tpe\n"
        f"pruner: {pruner}\n"
        "seeds: [0]\n"
    )


def timed_study_run(spec_text: str, name: str, workdir: Path, data_root: str,
                    options: list[str]) -> tuple[float, TreePeaks]:
    """``dropout-lab study run SPEC --results-dir workdir/results [options]`` in a fresh ``workdir``.

    Returns the wall time from start to exit and the process tree's memory peaks; a failed run
    ends the benchmark with its log's tail.
    """
    results = workdir / "results"
    spec = workdir / f"{name}.yaml"
    workdir.mkdir(parents=True)
    spec.write_text(spec_text)
    env = {**os.environ, "DROPOUT_LAB_DATA": data_root, "DROPOUT_LAB_RESULTS": str(results)}
    cmd = [sys.executable, "-m", "dropout_lab.cli", "study", "run", str(spec), "--results-dir", str(results),
           *options]
    with open(workdir / "study_run.log", "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        with TreePeaks(proc.pid) as peaks:
            proc.wait()
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write((workdir / "study_run.log").read_text()[-3000:])
        worker_log = results / "studies" / name / "workers.log"
        if worker_log.exists():
            sys.stderr.write(worker_log.read_text()[-3000:])
        raise SystemExit(f"study {name} ({' '.join(options)}) failed with status {proc.returncode}")
    return wall, peaks


def run_study(spec_text: str, name: str, jobs: int, workdir: Path, data_root: str,
              overrides: tuple[str, ...] = ()) -> dict:
    """``dropout-lab study run`` on a fresh results folder; wall time, trial states, peaks per worker."""
    results = workdir / "results"
    wall, peaks = timed_study_run(spec_text, name, workdir, data_root,
                                  ["--jobs", str(jobs), *(f"--override={o}" for o in overrides)])
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{results / 'studies.db'}")
    trials = study.get_trials(deepcopy=False)
    records = [json.loads(p.read_text()) for p in (results / "studies" / name).glob("trial_*/run.json")]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return {
        "wall_s": wall,
        "complete": len(complete),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "epochs_trained": sum(len(r["curves"]) for r in records),
        "run_seconds": sum(r["wall_time_s"] for r in records),
        "best": max((t.value for t in complete), default=float("nan")),
        "worker_peaks_mib": peaks.worker_peaks_mib(),
        "threads": max((r["config"].get("threads") or 0 for r in records), default=0),
    }


# ----------------------------------------------------------------------------------------------
# (iii) RSS over several runs in one process
# ----------------------------------------------------------------------------------------------

def rss_child(args: argparse.Namespace) -> None:
    from dropout_lab.config.compose import compose_train_config
    from dropout_lab.data.datamodule import cpu_splits, load_tensors
    from dropout_lab.training.fit import train

    rows = [{"after": "imports", "rss_mib": _vm_kib("self", "VmRSS") / 1024}]
    with tempfile.TemporaryDirectory() as out:
        for i in range(args.rss_runs):
            overrides = ["experiment=chapter", f"trainer.max_epochs={args.rss_epochs}", f"seed={i}", "threads=1",
                         "trainer=cpu", f"data.root={args.data_root}", f"results_dir={out}"]
            if args.train_subset:
                overrides.append(f"data.train_subset={args.train_subset}")
            train(compose_train_config(overrides), Path(out) / f"run{i}", overrides)
            rows.append({"after": f"run {i + 1}", "rss_mib": _vm_kib("self", "VmRSS") / 1024,
                         "peak_mib": _vm_kib("self", "VmHWM") / 1024})
    files, splits = load_tensors.cache_info(), cpu_splits.cache_info()
    cached = sum(t.nbytes for t in load_tensors(args.data_root).values()) / 2**20
    print("RESULT " + json.dumps({"rows": rows, "cached_mib": cached, "file_reads": files.misses,
                                  "split_builds": splits.misses, "split_hits": splits.hits}), flush=True)


def rss_growth(args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-rss", "--rss-runs", str(args.rss_runs),
           "--rss-epochs", str(args.rss_epochs), "--data-root", args.data_root,
           "--train-subset", str(args.train_subset or 0)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit("the RSS measurement failed")
    return json.loads(lines[-1][len("RESULT "):])


# ----------------------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid-epochs", type=int, default=5, help="epochs per run of the 16-run grid")
    parser.add_argument("--grid-seeds", type=int, default=len(SEEDS), help="seeds per grid value (4: 16 runs)")
    parser.add_argument("--tune-trials", type=int, default=12)
    parser.add_argument("--tune-epochs", type=int, default=5)
    parser.add_argument("--tune-jobs", type=int, default=2, help="workers of the tuning study")
    parser.add_argument("--repeats", type=int, default=2, help="repetitions of the alternating configurations")
    parser.add_argument("--rss-runs", type=int, default=4, help="runs in one process for the RSS growth check")
    parser.add_argument("--rss-epochs", type=int, default=1)
    parser.add_argument("--train-subset", type=int, default=0, help="training images per run (0: all 50k)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: grid, tune, rss")
    parser.add_argument("--data-root", default=os.environ.get("DROPOUT_LAB_DATA", str(ROOT / "data")))
    add_readme_option(parser)
    parser.add_argument("--child-rss", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data_root = str(Path(args.data_root).resolve())
    if args.child_rss:
        rss_child(args)
        return
    skip = set(filter(None, args.skip.split(",")))
    seeds = list(range(args.grid_seeds))
    n_grid = len(DROPOUT_1) * len(seeds)

    info = machine_info()
    load_start, started = load_average(), dt.datetime.now(dt.UTC)
    print(f"bench_sweep: grid {n_grid} runs x {args.grid_epochs} epoch(s) with 1 and 2 jobs; tuning {args.tune_trials} "
          f"trials x {args.tune_epochs} epochs, pruner median vs none ({args.tune_jobs} job(s)); {args.repeats} "
          f"repetition(s); load average {load_start}", flush=True)
    # (kind, jobs, pruner, extra overrides): `study run` gives each run cores / jobs torch threads;
    # "grid1t" is 1 job with 1 thread, to tell the parallel speedup from the threads' effect.
    configs = []
    if "grid" not in skip:
        configs += [("grid", 1, None, ()), ("grid1t", 1, None, ("threads=1",)), ("grid", 2, None, ())]
    if "tune" not in skip:
        configs += [("tune", args.tune_jobs, "median", ()), ("tune", args.tune_jobs, "none", ())]
    results: dict[tuple, list[dict]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        for rep in range(args.repeats):
            for config in configs:
                kind, jobs, pruner, overrides = config
                workdir = Path(tmp) / f"{kind}_{jobs}_{pruner}_{rep}"
                if kind.startswith("grid"):
                    r = run_study(grid_spec(args.grid_epochs, seeds, args.train_subset), "bench_grid", jobs, workdir,
                                  args.data_root, overrides)
                    label = f"grid, --jobs {jobs}" + "".join(f" --override {o}" for o in overrides)
                else:
                    name = f"bench_tune_{pruner}"
                    r = run_study(tune_spec(name, pruner, args.tune_trials, args.tune_epochs, args.train_subset), name,
                                  jobs, workdir, args.data_root, overrides)
                    label = f"tuning, pruner {pruner}"
                results[config].append(r)
                print(f"  rep {rep + 1} {label}: wall {r['wall_s']:.1f} s, complete {r['complete']}, pruned "
                      f"{r['pruned']}, failed {r['failed']}, epochs trained {r['epochs_trained']}, best "
                      f"{r['best']:.4f}, worker peak RSS {[round(x) for x in r['worker_peaks_mib']]} MiB",
                      flush=True)
    rss = None if "rss" in skip else rss_growth(args)
    load_end = load_average()

    lines = [
        "## Sweeps: 1 vs 2 workers, pruning on vs off, RSS per worker",
        "",
        f"Generated by `python benchmarks/bench_sweep.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` "
        f"on {started:%Y-%m-%d %H:%M} UTC; {args.repeats} repetition(s), configurations alternating, medians. "
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}. Load average (1/5/15 min) at start "
        f"{load_start}, at end {load_end}"
        + (" (above half the cores at the start: the average lags by minutes, so it may be an earlier run; "
           "if other jobs are running, timings are noisy)"
           if float(load_start.split()[0]) > 0.5 * (info["cores"] or 1) else "")
        + ".",
        "",
    ]
    print()
    if "grid" not in skip:
        grid = [("1", results[("grid", 1, None, ())]),
                ("1 (`--override threads=1`)", results[("grid1t", 1, None, ("threads=1",))]),
                ("2", results[("grid", 2, None, ())])]
        g1, g1t, g2 = (rs for _, rs in grid)
        speedup = median([a["wall_s"] / b["wall_s"] for a, b in zip(g1, g2)])
        speedup_1t = median([a["wall_s"] / b["wall_s"] for a, b in zip(g1t, g2)])
        lines += [
            f"**Grid**: `dropout-lab study run SPEC --jobs N` on a fresh results folder, {n_grid} runs "
            f"(`experiment=chapter`, {args.grid_epochs} epoch(s) on {args.train_subset or 'all 50k'} training images, "
            f"`model.dropout_1` in {DROPOUT_1} x seeds {seeds}); "
            "wall time from the command's start to its exit (worker start-up included). Torch threads per run: "
            "cores / jobs (`study run`'s default), and 1 job with 1 thread for comparison.",
            "",
            "| workers | threads per run | wall s | runs per hour | sum of the runs' own wall s "
            "| peak RSS per worker MiB |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for label, rs in grid:
            w = median([r["wall_s"] for r in rs])
            peaks = ", ".join(f"{x:.0f}" for x in rs[-1]["worker_peaks_mib"])
            lines.append(f"| {label} | {rs[-1]['threads']} | {w:.1f} | {n_grid * 3600 / w:,.0f} | "
                         f"{median([r['run_seconds'] for r in rs]):.1f} | {peaks} |")
            print(f"grid, {label} job(s): {w:.1f} s, {n_grid * 3600 / w:,.0f} runs/h, worker peak RSS {peaks} MiB")
        lines += ["", f"**Speedup of 2 workers over 1: {speedup:.2f}x** ({speedup_1t:.2f}x over 1 worker with 1 "
                  "thread); medians of the per-repetition ratios, peaks of the last repetition.", ""]
        print(f"grid speedup 2 vs 1 jobs: {speedup:.2f}x (vs 1 job with 1 thread: {speedup_1t:.2f}x)")
    if "tune" not in skip:
        on, off = results[("tune", args.tune_jobs, "median", ())], results[("tune", args.tune_jobs, "none", ())]
        lines += [
            f"**Tuning**: TPE (seeded) over `model.dropout_1`, `model.dropout_2` in [0, 0.9] and `optim.lr` in "
            f"[0.01, 1] (log), {args.tune_trials} trials of up to {args.tune_epochs} epochs, "
            f"{args.tune_jobs} worker(s); pruning on the per-epoch `val_acc` (Optuna's MedianPruner, 3 start-up "
            "trials) vs none.",
            "",
            "| pruner | wall s | complete | pruned | epochs trained | best val_acc | peak RSS per worker MiB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for pruner, rs in (("median", on), ("none", off)):
            peaks = ", ".join(f"{x:.0f}" for x in rs[-1]["worker_peaks_mib"])
            lines.append(f"| {pruner} | {median([r['wall_s'] for r in rs]):.1f} | {rs[-1]['complete']} | "
                         f"{rs[-1]['pruned']} | {median([r['epochs_trained'] for r in rs]):.0f} | "
                         f"{median([r['best'] for r in rs]):.4f} | {peaks} |")
        ratio = median([a["wall_s"] / b["wall_s"] for a, b in zip(on, off)])
        lines += ["", f"**Pruning on / off wall time: {ratio:.2f}** (median of the per-repetition ratios); wall "
                  "s, epochs trained and best val_acc are medians, complete, pruned and peaks are the last "
                  "repetition's.", ""]
        print(f"tuning: pruning on {median([r['wall_s'] for r in on]):.1f} s "
              f"(best {median([r['best'] for r in on]):.4f}), "
              f"off {median([r['wall_s'] for r in off]):.1f} s (best {median([r['best'] for r in off]):.4f}); "
              f"on/off {ratio:.2f}")
    if rss is not None:
        rows = rss["rows"]
        growth = rows[-1]["rss_mib"] - rows[1]["rss_mib"]
        lines += [
            f"**RSS over {args.rss_runs} runs in one process** (`train()` called in a loop, as a study worker "
            f"does; {args.rss_epochs} epoch(s), {args.train_subset or 'all 50k'} training images): "
            f"the files were read {rss['file_reads']} time(s) "
            f"(`load_tensors`, {rss['cached_mib']:.0f} MiB of tensors) and the splits built {rss['split_builds']} "
            f"time(s) (`cpu_splits`, then {rss['split_hits']} cache hits).",
            "",
            "| after | RSS MiB | peak RSS so far MiB |",
            "| --- | ---: | ---: |",
            *[f"| {r['after']} | {r['rss_mib']:.0f} | {r['peak_mib']:.0f} |" if "peak_mib" in r
              else f"| {r['after']} | {r['rss_mib']:.0f} | - |" for r in rows],
            "",
            f"Growth from run 1 to run {args.rss_runs}: **{growth:+.0f} MiB** (one copy of the data set is "
            f"{rss['cached_mib']:.0f} MiB). RSS after the imports is mostly `import torch` (a CUDA build).",
        ]
        print("RSS in one process: " + ", ".join(f"{r['after']} {r['rss_mib']:.0f} MiB" for r in rows)
              + f"; growth run 1 -> {args.rss_runs}: {growth:+.0f} MiB")
    print(f"load average: start {load_start}, end {load_end}")
    publish_section(args.readme, BEGIN, END, "\n".join(lines))


if __name__ == "__main__":
    main()
