"""A worker's death in ``study run --jobs 2``: the others go on, its run is redone, nothing outlives its parent."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from conftest import CLI, heartbeat_age_s, kill_worker_and_finish, process_gone, study_if_ready, wait_for

optuna.logging.set_verbosity(optuna.logging.WARNING)

pytestmark = pytest.mark.slow


def _start(tmp_path: Path, data_root: Path, name: str, epochs: int, cells: dict) -> tuple[subprocess.Popen, Path]:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({"name": name, "question": "q", "experiment": "smoke", "epochs": epochs,
                                    "grid": cells, "seeds": [0, 1]}))
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(tmp_path / "results")}
    output = tmp_path / f"{name}.out"
    with open(output, "w") as out:
        proc = subprocess.Popen([*CLI, "study", "run", str(spec), "--jobs", "2", "--heartbeat", "1"], env=env,
                                cwd=tmp_path, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    return proc, output


def _running_with_worker(db: Path, name: str) -> list[FrozenTrial]:
    """RUNNING trials whose worker has recorded its pid and whose heartbeat row exists."""
    study = study_if_ready(db, name)
    if study is None:
        return []
    return [t for t in study.get_trials(states=(TrialState.RUNNING,))
            if "worker" in t.user_attrs and heartbeat_age_s(db, name, t.number) is not None]


def _two_workers_running(db: Path, name: str) -> list[int] | None:
    """The pids of two workers that are both in a run, else None."""
    pids = sorted({t.user_attrs["worker"]["pid"] for t in _running_with_worker(db, name)})
    return pids if len(pids) == 2 else None


def _started_pids(tmp_path: Path, name: str) -> list[int]:
    """The workers' pids, as the runner logs them when it starts them."""
    log = tmp_path / "results" / "studies" / name / "workers.log"
    return [int(pid) for pid in re.findall(r"worker \d+ started: pid (\d+)", log.read_text())] if log.exists() else []


def _kill_leftovers(pids: list[int]) -> None:
    """Clean up after a failed test: SIGKILL those of ``pids`` that are still dropout-lab processes."""
    for pid in pids:
        try:
            if not process_gone(pid) and b"dropout_lab" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass


def test_a_killed_worker_costs_only_its_run_and_the_study_finishes(data_root: Path, tmp_path: Path) -> None:
    db = tmp_path / "results" / "studies.db"
    proc, output = _start(tmp_path, data_root, "death", epochs=20, cells={"model.dropout_1": [0.2, 0.5]})
    try:
        (victim, *_) = wait_for(lambda: _running_with_worker(db, "death"), "a run in progress with a heartbeat")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    pid = victim.user_attrs["worker"]["pid"]
    kill_worker_and_finish(proc, pid, output)

    study = optuna.load_study(study_name="death", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    completed = Counter(tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE)
    assert len(completed) == 4 and set(completed.values()) == {1}, completed  # every cell once
    # The run the worker held when it was killed (normally the victim seen RUNNING) failed as stale ...
    (killed,) = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs["worker"]["pid"] == pid]
    (retry,) = [t for t in trials if killed.number in t.system_attrs.get("retry_history", ())]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params  # ... and a survivor redid it
    assert retry.user_attrs["worker"]["pid"] != pid
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))

    pids = _started_pids(tmp_path, "death")
    assert len(pids) == 2 and pid in pids
    assert all(process_gone(p) for p in pids)  # the runner waited for every worker


def test_killing_study_run_takes_its_workers_with_it(data_root: Path, tmp_path: Path) -> None:
    db = tmp_path / "results" / "studies.db"
    proc, output = _start(tmp_path, data_root, "orphans", epochs=500, cells={"model.dropout_1": [0.2]})
    pids: list[int] = []
    try:
        pids = wait_for(lambda: _two_workers_running(db, "orphans"), "both workers in a run")
        assert pids == sorted(_started_pids(tmp_path, "orphans")), output.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # the runner only, not its workers
        proc.wait(timeout=60)
        wait_for(lambda: all(process_gone(p) for p in pids), "the workers to die with their parent", timeout=30)
    finally:
        _kill_leftovers(pids)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
