"""``dropout-lab study run``: prepare the store, start local workers, show live progress."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from dropout_lab.studies.prepare import prepare_study, total_runs
from dropout_lab.studies.spec import StudySpec
from dropout_lab.studies.storage import default_storage_url, open_storage
from dropout_lab.studies.trial_records import progress_counts


@dataclass
class RunOptions:
    """How ``study run`` launches its workers on this host."""

    jobs: int = 1
    storage_url: str | None = None
    results_dir: str = field(default_factory=lambda: os.environ.get("DROPOUT_LAB_RESULTS", "results"))
    heartbeat: int = 30
    overrides: list[str] = field(default_factory=list)
    launcher: str = "joblib"

    @property
    def storage(self) -> str:
        return self.storage_url or default_storage_url(self.results_dir)

    @property
    def threads(self) -> int:
        """Torch threads per worker, so that the workers together use the cores once."""
        return max(1, (os.cpu_count() or 1) // self.jobs)


def worker_command(spec_path: str, options: RunOptions) -> list[str]:
    """The ``dropout-lab worker`` Hydra (multi)run that starts ``options.jobs`` local workers."""
    quoted = ",".join("'" + o.replace("'", "\\'") + "'" for o in options.overrides)
    cmd = [sys.executable, "-m", "dropout_lab.cli", "worker", f"study={spec_path}",
           f"storage={options.storage}", f"results_dir={options.results_dir}",
           f"threads={options.threads}", f"heartbeat={options.heartbeat}", f"overrides=[{quoted}]"]
    if options.jobs > 1:
        cmd += ["--multirun", f"worker=range({options.jobs})", f"hydra/launcher={options.launcher}"]
        if options.launcher == "joblib":
            cmd.append(f"hydra.launcher.n_jobs={options.jobs}")
    return cmd


def run_study(spec: StudySpec, spec_path: str, options: RunOptions, console: Console | None = None) -> dict[str, int]:
    """Run what is missing from a study and return the final counts.

    The storage is opened (and the grid enqueued) before any worker starts, so a bad URL fails
    at once. Workers' logs go to ``results/studies/NAME/workers.log``.
    """
    console = console or Console(stderr=True)
    storage = open_storage(options.storage, options.heartbeat)
    study = prepare_study(spec, storage)
    total = total_runs(spec)
    counts = progress_counts(study, total)
    if counts["remaining"] == 0 and counts["running"] == 0:
        console.print(f"study {spec.name}: all {total} runs already recorded; nothing to run")
        return counts
    log_path = Path(options.results_dir) / "studies" / spec.name / "workers.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    columns = [TextColumn(f"[bold]{spec.name}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with open(log_path, "a") as log, Progress(*columns, console=console, transient=False) as progress:
        proc = subprocess.Popen(worker_command(spec_path, options), stdout=log, stderr=subprocess.STDOUT)
        task = progress.add_task("runs", total=total, completed=counts["done"], detail="")
        try:
            while proc.poll() is None:
                time.sleep(1.0)
                counts = progress_counts(study, total)
                progress.update(task, completed=counts["done"] + counts["failed"],
                                detail=f"running {counts['running']}, failed {counts['failed']}")
        except KeyboardInterrupt:
            console.print("interrupted: stopping workers; relaunch the same command to resume")
            proc.wait()
            raise
        counts = progress_counts(study, total)
        progress.update(task, completed=counts["done"] + counts["failed"],
                        detail=f"running {counts['running']}, failed {counts['failed']}")
    if proc.returncode != 0:
        console.print(f"[red]workers exited with status {proc.returncode}; see {log_path}")
    return counts
