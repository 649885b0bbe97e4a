"""How far one Optuna store scales: claims per second with N workers on SQLite and on PostgreSQL.

Two modes, each on a fresh grid study of one cell per seed:

  claim  N forked worker processes work through the queue on the production claim/tell path
         (``GridQueue.claim``: re-queue stale runs, then claim under ``queue_lock``; ``TrialSession``
         holds and beats for each run; ``save_record`` and ``TrialSession.tell`` store and tell it),
         as ``runners/grid_worker.py::run_grid`` does, with a "training" that only builds a completed
         ``RunRecord``. Claim latency is the time inside ``GridQueue.claim``. Workers start together
         (a barrier) after their imports and store connections, so start-up is not timed.
  train  ``dropout-lab study run SPEC --jobs N`` with ``experiment=smoke`` (2k images, 1 epoch):
         the whole command is timed, start-up included; claim latency is not visible from outside.

Every run then counts COMPLETE trials per cell: ``lost`` cells have none, ``duplicated`` counts
completions beyond the first. During the PostgreSQL claim run at ``--kill-n`` workers, ``--kills``
workers are SIGKILLed while they hold a claim (a RUNNING trial that names their pid); heartbeats (1 s,
stale after 3 s) re-queue their runs and the survivors finish them. PostgreSQL runs only where its
server binaries are installed (``tests/pg_server.py`` starts a throw-away server).

    python benchmarks/bench_store.py --quick                          # <= 3 minutes, ends with its line
    python benchmarks/bench_store.py --modes claim --workers 1 2 4 8 16 --readme benchmarks/README.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))  # the throw-away PostgreSQL server the tests use

import optuna  # noqa: E402
import yaml  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bench_train import load_average, machine_info, write_section  # noqa: E402
from dropout_lab.config.study_spec import load_spec  # noqa: E402
from dropout_lab.runners.grid_worker import GridQueue  # noqa: E402
from dropout_lab.runners.session import TrialSession  # noqa: E402
from dropout_lab.store.backends import open_storage  # noqa: E402
from dropout_lab.store.claims import mark_worker, orphans_lock, queue_lock, suggest_fixed  # noqa: E402
from dropout_lab.store.heartbeat import heartbeat_interval  # noqa: E402
from dropout_lab.store.study_setup import CELL_ATTR, CELL_CHOICES, open_study, prepare_study  # noqa: E402
from dropout_lab.store.trial_records import save_record  # noqa: E402
from dropout_lab.training.run_record import RunRecord, Status  # noqa: E402
from pg_server import postgres_installed, throwaway_postgres  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

BEGIN, END = "<!-- bench_store:begin -->", "<!-- bench_store:end -->"
HEARTBEAT_S, GRACE_S, POLL_S = 1, 3, 0.2
CLI = [sys.executable, "-m", "dropout_lab.cli"]
PER_RUN_ROW = "per-run"  # the bench_population table row of today's default worker (one claim per run)


# ----------------------------------------------------------------------------------------------
# A study of ``cells`` queued runs.
# ----------------------------------------------------------------------------------------------

def write_spec(folder: Path, name: str, cells: int) -> Path:
    """A grid study of ``cells`` runs (one cell, one run per seed) on the smoke budget."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "question": "store scale-out", "experiment": "smoke", "epochs": 1,
                                    "grid": {"model.dropout_1": [0.5]}, "seeds": list(range(cells))}))
    return path


def count_cells(url: str, name: str, cells: int) -> dict[str, int]:
    """Lost (no COMPLETE trial), duplicated (COMPLETE beyond the first) and re-queued (stale, retried) runs."""
    storage = open_storage(url, heartbeat_interval=None)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    complete = Counter(json.dumps(t.user_attrs[CELL_ATTR], sort_keys=True) for t in trials
                       if t.state == TrialState.COMPLETE)
    requeued = sum(1 for t in trials if t.system_attrs.get("retry_history"))
    done = [t.datetime_complete for t in trials if t.state == TrialState.COMPLETE and t.datetime_complete]
    storage.engine.dispose()
    return {"complete": sum(complete.values()), "lost": cells - len(complete),
            "duplicated": sum(n - 1 for n in complete.values()), "requeued": requeued,
            "last_complete": max(done).timestamp() if done else 0.0}


def completed_record(cell: dict[str, Any], metric: str) -> RunRecord:
    """The trivial "training": a completed run whose ``metric`` is 1."""
    name = metric.removeprefix("best_")
    return RunRecord(config={"bench": "store"}, seed=int(cell.get("seed", 0)), config_hash="bench-store",
                     status=Status.COMPLETED, final={name: 1.0}, best={name: 1.0, "epoch": 1})


# ----------------------------------------------------------------------------------------------
# claim mode: forked workers on the production claim/tell path.
# ----------------------------------------------------------------------------------------------

def claim_worker(url: str, spec_path: str, workers: int, barrier: Any, out: str) -> None:
    """One worker: ``run_grid``'s loop with a trivial training; writes its claim latencies to ``out``."""
    spec = load_spec(spec_path)
    storage = open_storage(url, HEARTBEAT_S, GRACE_S)
    study = open_study(spec, storage)
    queue = GridQueue(study, storage, queue_lock(url), workers=workers, orphans=orphans_lock(url))
    choices = study.user_attrs.get(CELL_CHOICES, {})
    latencies: list[float] = []
    barrier.wait()
    with TrialSession(study, storage, spec.metric) as session:
        while True:
            start = time.perf_counter()
            trial_ids, _ = queue.claim()
            if trial_ids:
                latencies.append(time.perf_counter() - start)
                for trial_id in trial_ids:
                    trial = session.hold(trial_id)
                    cell = storage.get_trial(trial_id).user_attrs[CELL_ATTR]
                    suggest_fixed(trial, cell, choices)
                    mark_worker(trial)
                    save_record(trial, completed_record(cell, spec.metric), "-")
                    session.tell(trial, [completed_record(cell, spec.metric)])
                continue
            if heartbeat_interval(storage) and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                time.sleep(POLL_S)  # as run_grid: a killed worker's run may still be re-queued
                continue
            break
    Path(out).write_text(json.dumps(latencies))


def _kill_holders(url: str, name: str, procs: list[Any], kills: int, cells: int, deadline: float,
                  rng: random.Random) -> tuple[int, int]:
    """SIGKILL workers, spread over the run, while a RUNNING trial names their pid, until ``kills`` of them died
    holding it (the trial still RUNNING once the worker is gone; one that told it first does not count), keeping
    two workers alive. Returns (workers killed, those killed while holding a run)."""
    storage = open_storage(url, heartbeat_interval=None)
    study = optuna.load_study(study_name=name, storage=storage)
    pids = {p.pid: p for p in procs}
    killed = held = 0
    while held < kills and time.monotonic() < deadline and sum(p.is_alive() for p in procs) > 2:
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state == TrialState.COMPLETE for t in trials)
        if done < cells * (held + 1) / (kills + 2):  # spread the kills over the run
            time.sleep(0.05)
            continue
        holders = [(t.user_attrs["worker"]["pid"], t.number) for t in trials
                   if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
        holders = [(pid, number) for pid, number in holders if pid in pids and pids[pid].is_alive()]
        if not holders:
            continue
        pid, number = rng.choice(holders)
        os.kill(pid, signal.SIGKILL)
        pids[pid].join()
        killed += 1
        held += study.get_trials(deepcopy=False)[number].state == TrialState.RUNNING
    storage.engine.dispose()
    return killed, held


def claim_run(url: str, folder: Path, name: str, workers: int, cells: int, kills: int = 0,
              timeout_s: float = 300.0) -> dict[str, Any]:
    """Work a fresh study of ``cells`` runs with ``workers`` forked workers; the row of the table."""
    spec_path = write_spec(folder, name, cells)
    storage = open_storage(url, HEARTBEAT_S, GRACE_S)
    prepare_study(load_spec(str(spec_path)), storage)
    storage.engine.dispose()  # no pooled connection is inherited by the forked workers
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(workers + 1)
    outs = [folder / f"{name}.{i}.json" for i in range(workers)]
    procs = [ctx.Process(target=claim_worker, args=(url, str(spec_path), workers, barrier, str(out)))
             for out in outs]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=timeout_s)
    start, deadline = time.time(), time.monotonic() + timeout_s
    killed, held = _kill_holders(url, name, procs, kills, cells, deadline, random.Random(0)) if kills else (0, 0)
    for proc in procs:
        proc.join(max(1.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
    latencies = [x for out in outs if out.exists() for x in json.loads(out.read_text())]
    counts = count_cells(url, name, cells)
    wall = max(counts["last_complete"] - start, 1e-9)
    return {"mode": "claim", "workers": workers, "cells": cells, "wall_s": wall,
            "per_min": 60 * counts["complete"] / wall, "claims_per_s": counts["complete"] / wall,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
            "p99_ms": 1000 * statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else None,
            "killed": killed, "held": held, **counts}


# ----------------------------------------------------------------------------------------------
# train mode: the normal ``study run --jobs N`` path on the smoke budget.
# ----------------------------------------------------------------------------------------------

def train_run(url: str, folder: Path, name: str, workers: int, cells: int, data_root: str,
              timeout_s: float = 600.0) -> dict[str, Any]:
    """``dropout-lab study run SPEC --jobs N --storage URL`` on a fresh study; the row of the table."""
    spec_path = write_spec(folder, name, cells)
    env = {**os.environ, "DROPOUT_LAB_DATA": data_root, "DROPOUT_LAB_RESULTS": str(folder / f"{name}-results"),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [*CLI, "study", "run", str(spec_path), "--jobs", str(workers), "--storage", url,
           "--heartbeat", str(HEARTBEAT_S)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=folder, capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    counts = count_cells(url, name, cells)
    return {"mode": "train", "workers": workers, "cells": cells, "wall_s": wall,
            "per_min": 60 * counts["complete"] / wall, "claims_per_s": counts["complete"] / wall,
            "p50_ms": None, "p99_ms": None, "killed": 0, "held": 0, **counts}


# ----------------------------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------------------------

def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| backend | mode | workers | runs | wall s | trials per minute | claim p50 ms | claim p99 ms "
             "| killed (holding a run) | re-queued | lost | duplicated |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['mode']} | {r['workers']} | {r['cells']} | {r['wall_s']:.1f} "
                     f"| {r['per_min']:.0f} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | {r['killed']} ({r['held']}) "
                     f"| {r['requeued']} | {r['lost']} | {r['duplicated']} |")
    return "\n".join(lines)


def population_figures(readme: Path) -> dict[str, tuple[int, float]] | None:
    """From the ``bench_population`` table of ``readme``: engine -> (K, runs per hour), measured there."""
    text = readme.read_text() if readme.exists() else ""
    if "<!-- bench_population:begin -->" not in text:
        return None
    section = text.split("<!-- bench_population:begin -->", 1)[1].split("<!-- bench_population:end -->", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    col = header.index("runs per hour")
    out: dict[str, tuple[int, float]] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if "runs per hour" not in header or len(cells) != len(header):
            break
        engine = cells[0]
        k = int(engine.split("K=")[1].split(",")[0]) if "K=" in engine else 1
        out[engine] = (k, float(cells[col].replace(",", "")))  # "1,032": thousands separator
    return out


def hosts_paragraph(rows: list[dict[str, Any]], figures: dict[str, tuple[int, float]] | None) -> str:
    """How many hosts one PostgreSQL store serves, from this run's best PostgreSQL claim rate and the measured
    runs per hour per host of ``bench_population`` (a 2-core host, chapter budget)."""
    pg = [r for r in rows if r["backend"] == "postgresql" and r["mode"] == "claim" and not r["killed"]]
    if not pg:
        return "No PostgreSQL claim run: no estimate of hosts per store."
    best = max(pg, key=lambda r: r["claims_per_s"])
    rate = best["claims_per_s"]
    text = (f"**Hosts per PostgreSQL store.** The best PostgreSQL rate measured here is **{rate:.1f} runs/s** "
            f"({best['workers']} workers; each run one claim, its record and its tell; claim p50 "
            f"{_ms(best['p50_ms'])} ms, p99 {_ms(best['p99_ms'])} ms).")
    if not figures:
        return text + " (No `bench_population` table in the README: no per-host rate to divide by.)"
    parts = []
    for engine, (k, runs_h) in figures.items():
        runs_s = runs_h / 3600
        parts.append(f"`{engine}`: {runs_h:.0f} runs/h per host, {runs_s / k:.4f} claims/s per host (one claim per "
                     f"{k} run(s)), {runs_s:.4f} recorded and told runs/s per host: about **{rate / runs_s:,.0f} "
                     f"hosts**")
    return (text + " Today's worker claims once per run (per-run engine) or once per population of K, but records "
            "and tells every run on its own, so the store's work grows with runs, not claims; dividing by the "
            "runs per hour per host at the chapter budget (the `bench_population` table above) gives "
            "where one store saturates: " + "; ".join(parts) + ". The rate was measured with the database server and "
            "every worker on the same cores, most of them spent in the workers' Python (Optuna, SQLAlchemy), so a "
            "dedicated database host does better; on the other side, these host counts are upper bounds: heartbeats "
            "(one write per held run per interval), status reads and launchers also load the store, and shorter "
            "runs (fewer epochs, faster hosts) divide them. The next step, should a fleet come near that, is "
            "batching: claim a population's K runs in one transaction (one `UPDATE ... WHERE state = WAITING` "
            "rather than K one-row claims) and tell and record them in one, and beat once per worker rather than "
            "per run.\n")


@contextmanager
def backends(names: list[str], folder: Path, max_workers: int) -> Iterator[list[tuple[str, str]]]:
    """(backend, URL) for each of ``names`` that can run here; PostgreSQL on a throw-away server."""
    with ExitStack() as stack:
        out = []
        for name in names:
            if name == "sqlite":
                out.append((name, f"sqlite:///{folder / 'bench.db'}"))
            elif postgres_installed():
                out.append((name, stack.enter_context(throwaway_postgres(max_connections=4 * max_workers + 20))))
            else:
                print("PostgreSQL server binaries not found: PostgreSQL runs skipped", flush=True)
        yield out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="<= 3 minutes: fewer workers and runs")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--modes", nargs="+", default=["claim", "train"], choices=["claim", "train"])
    parser.add_argument("--workers", nargs="+", type=int, default=None, help="N values (default 1 2 4 8 16)")
    parser.add_argument("--claim-runs", type=int, default=None, help="queued runs per claim run (default 400)")
    parser.add_argument("--train-workers", nargs="+", type=int, default=None, help="N values of train mode")
    parser.add_argument("--train-runs", type=int, default=None, help="queued runs per train run (default 8)")
    parser.add_argument("--kill-n", type=int, default=8, help="the PostgreSQL claim run with kills has N workers")
    parser.add_argument("--kills", type=int, default=3, help="workers SIGKILLed during that run")
    parser.add_argument("--data-root", default=os.environ.get("DROPOUT_LAB_DATA"))
    parser.add_argument("--readme", type=Path, help="write the section into this README (else print it)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the test's budget
    args = parser.parse_args()
    if args.tiny:
        args.quick = True
        args.workers = args.workers or [1, 2]
        args.claim_runs = args.claim_runs or 12
        args.train_workers = args.train_workers or []
        args.kills = 0
    workers = args.workers or ([1, 4, 8] if args.quick else [1, 2, 4, 8, 16])
    claim_runs = args.claim_runs or (120 if args.quick else 400)
    train_workers = args.train_workers if args.train_workers is not None else ([2] if args.quick else [1, 2, 4])
    train_runs = args.train_runs or (4 if args.quick else 8)
    info, load_start = machine_info(), load_average()
    started = dt.datetime.now(dt.UTC)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        folder = Path(tmp)
        data_root = args.data_root
        if "train" in args.modes and train_workers and not data_root:
            from dropout_lab.data.files import ensure_fashion_mnist

            data_root = str(folder / "data")
            ensure_fashion_mnist(Path(data_root), download=False)
        with backends(args.backends, folder, max(workers + train_workers + [args.kill_n])) as urls:
            for backend, url in urls:
                plan: list[tuple[str, int, int]] = []
                if "claim" in args.modes:
                    plan += [("claim", n, 0) for n in workers]
                    if backend == "postgresql" and args.kills:
                        plan.append(("claim", args.kill_n, args.kills))
                if "train" in args.modes and (backend == "sqlite" or not args.quick):
                    plan += [("train", n, 0) for n in train_workers]
                for i, (mode, n, kills) in enumerate(plan):
                    name = f"{backend}-{mode}-{n}-{i}"
                    if mode == "claim":
                        row = claim_run(url, folder, name, n, claim_runs, kills)
                    else:
                        assert data_root is not None
                        row = train_run(url, folder, name, n, train_runs, data_root)
                    row["backend"] = backend
                    rows.append(row)
                    print(f"{backend} {mode} N={n}{f' kills={kills}' if kills else ''}: "
                          f"{row['per_min']:.0f} trials/min, claim p50 {_ms(row['p50_ms'])} ms "
                          f"p99 {_ms(row['p99_ms'])} ms, killed {row['killed']} ({row['held']} holding a run), "
                          f"re-queued {row['requeued']}, "
                          f"lost {row['lost']}, duplicated {row['duplicated']}", flush=True)
    command = "python benchmarks/bench_store.py " + " ".join(sys.argv[1:])
    body = (f"## Store scale-out: claims per second on one Optuna store\n\n"
            f"Generated by `{command.strip()}` on {started:%Y-%m-%d %H:%M} UTC. Machine: {info['cpu']}, "
            f"{info['cores']} cores, torch {info['torch']}. Load average (1/5/15 min) at start {load_start}, "
            f"at end {load_average()}.\n\n"
            f"**claim**: N forked workers on the production claim/tell path (`GridQueue.claim`, `TrialSession`, "
            f"`save_record`, `tell`) with no training, {claim_runs} queued runs, heartbeats every {HEARTBEAT_S} s "
            f"(a run unheard for {GRACE_S} s is re-queued); trials per minute from the workers' start (after their "
            f"imports) to the last completion; claim latency is the time inside `GridQueue.claim`. "
            + (f"**train**: `dropout-lab study run SPEC --jobs N` with `experiment=smoke` (2k images, 1 epoch), "
               f"{train_runs} runs, timed from the command's start (imports included) to its exit. "
               if any(r["mode"] == "train" for r in rows) else "")
            + f"The store server (PostgreSQL) and all N workers share this machine's {info['cores']} cores. "
            f"A row with killed workers SIGKILLed workers seen holding a run (a RUNNING trial naming their pid) "
            f"until {args.kills} of them died still holding it; lost = cells never completed, "
            f"duplicated = completions beyond the first per cell.\n\n"
            f"{table(rows)}\n\n"
            f"{hosts_paragraph(rows, population_figures(args.readme or HERE / 'README.md'))}\n")
    if args.readme:
        write_section(args.readme, BEGIN, END, body)
    else:
        print(body)
    claim_rates = [r["claims_per_s"] for r in rows if r["mode"] == "claim" and not r["killed"]]
    best = max(claim_rates) if claim_rates else 0.0
    print(f"store_claims_per_s={best:.1f} lost={sum(r['lost'] for r in rows)} "
          f"duplicated={sum(r['duplicated'] for r in rows)}")


if __name__ == "__main__":
    main()
