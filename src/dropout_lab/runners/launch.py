"""``dropout-lab study run``: prepare the store, start local workers, show live progress.

By default each of the ``--jobs`` workers is its own ``dropout-lab worker worker=I`` process
(``runners/processes.py``): the death of one (SIGKILL, the OOM killer) costs only its current
run, which its heartbeat's silence re-queues for the others; the runner waits for all of them and
reports how each one ended. ``--launcher NAME`` instead starts them as one ``dropout-lab worker
--multirun`` through that Hydra launcher (``submitit_local``; ``submitit_slurm`` is for clusters).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

from dropout_lab.config.engine import require_one_engine
from dropout_lab.config.study_spec import StudySpec
from dropout_lab.runners.processes import STOP_GRACE_S, WorkerProcess, start_workers, stop
from dropout_lab.store.backends import default_storage_url, open_storage
from dropout_lab.store.study_setup import prepare_study, study_cells, total_runs
from dropout_lab.store.trial_records import progress_counts

if TYPE_CHECKING:  # rich is imported when a study runs, not for ``study status``
    import optuna
    from rich.console import Console

#: ``--launcher`` value for one plain process per local worker (the default).
LOCAL = "local"
POLL_S = 1.0


@dataclass
class RunOptions:
    """How ``study run`` launches its workers on this host."""

    jobs: int = 1
    storage_url: str | None = None
    results_dir: str = field(default_factory=lambda: os.environ.get("DROPOUT_LAB_RESULTS", "results"))
    heartbeat: int = 30
    overrides: list[str] = field(default_factory=list)
    launcher: str = LOCAL
    population: str = "1"
    population_precision: str = "fp32"

    @property
    def storage(self) -> str:
        return self.storage_url or default_storage_url(self.results_dir)

    @property
    def threads(self) -> int:
        """Torch threads per worker, so that the workers together use the cores once."""
        return max(1, (os.cpu_count() or 1) // self.jobs)


def worker_command(spec_path: str, options: RunOptions, index: int | None = None) -> list[str]:
    """``dropout-lab worker`` for local worker ``index``, or (``index=None``, ``options.jobs > 1``) the Hydra
    multirun that starts ``options.jobs`` workers through ``options.launcher``."""
    quoted = ",".join("'" + o.replace("'", "\\'") + "'" for o in options.overrides)
    study = "'" + spec_path.replace("'", "\\'") + "'"  # a study reference: name or path, then field overrides
    cmd = [sys.executable, "-m", "dropout_lab.cli", "worker", f"study={study}",
           f"storage={options.storage}", f"results_dir={options.results_dir}",
           f"threads={options.threads}", f"heartbeat={options.heartbeat}", f"overrides=[{quoted}]",
           f"population={options.population}", f"population_precision={options.population_precision}",
           f"workers={options.jobs}"]
    if index is not None:
        cmd.append(f"worker={index}")
    elif options.jobs > 1:
        cmd += ["--multirun", f"worker=range({options.jobs})", f"hydra/launcher={options.launcher}"]
        if options.launcher == "joblib":
            cmd.append(f"hydra.launcher.n_jobs={options.jobs}")
    return cmd


def worker_commands(spec_path: str, options: RunOptions) -> list[list[str]]:
    """One command per local worker, or the one Hydra multirun that starts them through a launcher."""
    if options.launcher == LOCAL:
        return [worker_command(spec_path, options, index) for index in range(options.jobs)]
    return [worker_command(spec_path, options)]


def engine_note(spec: StudySpec, options: RunOptions) -> str:
    """One line saying which engine the study's runs use (populations may fall back to per-run)."""
    if spec.is_tuning and len(spec.seed_list) > 1:
        return (f"study {spec.name}: each trial trains its {len(spec.seed_list)} seeds as one fused population "
                f"({options.population_precision}); its value is their mean {spec.objective}")
    if str(options.population) == "1":
        return f"study {spec.name}: per-run engine (one run at a time per worker)"
    from dropout_lab.config.compose import compose_train_config
    from dropout_lab.config.engine import per_run_reason
    from dropout_lab.config.study_grid import grid_cells, run_overrides

    cell = (grid_cells(spec) or [{"seed": spec.seed_list[0]}])[0]
    try:
        cfg = compose_train_config([*run_overrides(spec, cell), *options.overrides])
    except Exception:  # the workers report a bad override per run
        return f"study {spec.name}: population={options.population} requested"
    reason = per_run_reason(cfg)
    if reason is not None:
        return (f"study {spec.name}: population={options.population} requested, but its runs use the per-run "
                f"engine: {reason}")
    return (f"study {spec.name}: population engine (population={options.population}, "
            f"{options.population_precision}): compatible runs train together as one fused network")


def _note(log: IO[str], message: str) -> None:
    """One line of the runner's own in the workers' log."""
    log.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}][study run] {message}\n")
    log.flush()


def _report_exits(workers: list[WorkerProcess], reported: set[int], log: IO[str], console: Console) -> None:
    """Log each worker's end once, and show it when it is not a clean exit."""
    for worker in workers:
        if worker.index in reported or worker.process.poll() is None:
            continue
        reported.add(worker.index)
        how = worker.describe_exit()
        _note(log, f"worker {worker.index} (pid {worker.pid}) ended: {how}")
        if how != "ok":
            alive = sum(w.process.poll() is None for w in workers)
            console.print(f"[yellow]worker {worker.index} (pid {worker.pid}) {how}; {alive} still running")


class StudyWorkers:
    """The workers of one ``study run``, started once, with live progress; stopped when the block ends.

    Workers' output goes to ``results/studies/NAME/workers.log``, with one line per worker's start (its
    pid) and end (its exit status). Leaving the block normally waits for the workers to exit (they do
    once the queue is empty and not held open); leaving it with an error or Ctrl-C interrupts them, and
    each re-queues its runs.
    """

    def __init__(self, spec: StudySpec, spec_path: str, options: RunOptions, console: Console) -> None:
        self.spec, self.spec_path, self.options, self.console = spec, spec_path, options, console
        self.log_path = Path(options.results_dir) / "studies" / spec.name / "workers.log"
        self.workers: list[WorkerProcess] = []
        self.reported: set[int] = set()

    def __enter__(self) -> StudyWorkers:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "a")  # closed in __exit__, after the workers
        note = engine_note(self.spec, self.options)
        self.console.print(note, soft_wrap=True, markup=False)
        self.workers = start_workers(worker_commands(self.spec_path, self.options), self.log)
        _note(self.log, note)
        for worker in self.workers:
            _note(self.log, f"worker {worker.index} started: pid {worker.pid}: {' '.join(worker.command)}")
        return self

    def alive(self) -> bool:
        return any(w.process.poll() is None for w in self.workers)

    def restart_ended(self) -> None:
        """Start again each worker that has ended (killed, or left when the queue closed), with its command."""
        _report_exits(self.workers, self.reported, self.log, self.console)
        for position, worker in enumerate(self.workers):
            if worker.process.poll() is None:
                continue
            (fresh,) = start_workers([worker.command], self.log)
            self.workers[position] = replace(fresh, index=worker.index)
            self.reported.discard(worker.index)
            _note(self.log, f"worker {worker.index} restarted: pid {fresh.pid} (was pid {worker.pid}, "
                            f"{worker.describe_exit()})")

    def follow(self, study: optuna.Study, total: int, until: Callable[[], bool] = lambda: False,
               tick: Callable[[], None] = lambda: None) -> dict[str, int]:
        """Show the study's progress until every worker has exited or ``until()``; ``tick()`` runs every poll.
        Returns the last counts."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [TextColumn(f"[bold]{self.spec.name}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn()]
        counts = progress_counts(study, total)
        try:
            with Progress(*columns, console=self.console, transient=False) as progress:
                task = progress.add_task("runs", total=total, completed=counts["done"], detail="")
                while True:
                    alive = self.alive()
                    _report_exits(self.workers, self.reported, self.log, self.console)
                    counts = progress_counts(study, total)
                    progress.update(task, completed=counts["done"] + counts["failed"],
                                    detail=f"running {counts['running']}, failed {counts['failed']}")
                    if not alive or until():
                        return counts
                    tick()
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            self.console.print("interrupted: stopping workers; relaunch the same command to resume")
            raise

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:  # the queue is closed: the workers exit by themselves, unless one hangs
                deadline = time.monotonic() + STOP_GRACE_S
                for worker in self.workers:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        worker.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            stop(self.workers)  # Ctrl-C, an error, or a hang: interrupt them (they re-queue their runs) and wait
            _report_exits(self.workers, self.reported, self.log, self.console)
        finally:
            self.log.close()
        if any(w.process.returncode != 0 for w in self.workers):
            self.console.print("[red]workers: " + ", ".join(f"{w.index} {w.describe_exit()}" for w in self.workers)
                               + f"; see {self.log_path}")


def run_study(spec: StudySpec, spec_path: str, options: RunOptions, console: Console | None = None) -> dict[str, int]:
    """Run what is missing from a study and return the final counts.

    The storage is opened (and the grid enqueued) before any worker starts, so a bad URL fails
    at once. The workers exit when the queue is empty (see :class:`StudyWorkers`).
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    storage = open_storage(options.storage, options.heartbeat)
    study = prepare_study(spec, storage)
    total = total_runs(spec)
    counts = progress_counts(study, total)
    if counts["remaining"] == 0 and counts["running"] == 0:
        console.print(f"study {spec.name}: all {total} runs already recorded; nothing to run")
        return counts
    require_one_engine(spec, study_cells(spec, storage), options.population, options.population_precision,
                       options.overrides)  # all arms on one engine and precision, or refused
    with StudyWorkers(spec, spec_path, options, console) as workers:
        counts = workers.follow(study, total)
    return counts
