"""A sequential study's workers stay through its looks.

A grid worker stays while its runner holds the study's queue open: it trains the next look's runs, and exits
when the queue closes or the runner's lease runs out (``store/queue_lease.py``). A worker lost between looks
is started again (``runners/launch.py``). End to end: ``test_sequential_study.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from dropout_lab.config.study_spec import StudySpec, load_spec
from dropout_lab.runners import grid_worker
from dropout_lab.runners.grid_worker import run_grid
from dropout_lab.runners.settings import WorkerSettings
from dropout_lab.store.backends import open_storage
from dropout_lab.store.queue_lease import QUEUE_OPEN_ATTR, QueueLease, queue_open
from dropout_lab.store.study_setup import prepare_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _spec(tmp_path: Path) -> StudySpec:
    path = tmp_path / "lease.yaml"
    path.write_text(yaml.safe_dump({
        "name": "lease", "question": "q", "experiment": "smoke", "epochs": 1, "grid": {"model": ["scratch", "concise"]},
        "seeds": {"first": 0, "min": 2, "max": 4, "batch": 2},
        "plan": {"primary": "test_acc_at_best_val", "comparisons": [
            {"name": "scratch vs concise", "treatment": {"model": "scratch"}, "control": {"model": "concise"},
             "margin": 0.01, "why": "a test of the workers, not of the nets"}]}}))
    return load_spec(str(path))


def _settings(tmp_path: Path, data_root: Path) -> WorkerSettings:
    return WorkerSettings(storage_url=f"sqlite:///{tmp_path / 'studies.db'}", results_dir=str(tmp_path / "results"),
                          heartbeat_interval=None, extra_overrides=[f"data.root={data_root}", "threads=1"],
                          poll_s=0.05)


def test_a_worker_waits_for_the_next_look_while_the_queue_is_open_and_exits_when_it_closes(
        tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, settings = _spec(tmp_path), _settings(tmp_path, data_root)
    storage = open_storage(settings.storage_url, None)
    study = prepare_study(spec.at_look(2), storage)  # look 1: seeds 0 and 1
    lease = QueueLease(study)
    lease.hold()
    idle: list[int] = []

    def runner_acts(_: float) -> None:  # each time the worker finds nothing to do, the runner takes its next step
        idle.append(len(study.get_trials(states=(TrialState.COMPLETE,))))
        if len(idle) == 1:
            prepare_study(spec.at_look(4), storage)  # look 2 queues seeds 2 and 3
        else:
            lease.close()

    monkeypatch.setattr(grid_worker.time, "sleep", runner_acts)
    assert run_grid(study, storage, spec, settings) == 8  # both looks, one worker
    assert idle == [4, 8]  # it waited after look 1 (4 runs done) and after look 2, and left once closed
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["seed"] for t in done) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert not queue_open(study) and study.user_attrs[QUEUE_OPEN_ATTR] == 0.0


def test_a_worker_leaves_when_the_runners_lease_runs_out(tmp_path: Path, data_root: Path) -> None:
    spec, settings = _spec(tmp_path), _settings(tmp_path, data_root)
    storage = open_storage(settings.storage_url, None)
    study = prepare_study(spec.at_look(2), storage)
    QueueLease(study, seconds=1.0).hold()  # a runner that dies without closing never renews it
    assert run_grid(study, storage, spec, settings) == 4
    assert not queue_open(study)  # it left only after the lease had passed


def test_the_lease_is_renewed_once_a_quarter_of_it_has_passed(tmp_path: Path, data_root: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    study = prepare_study(_spec(tmp_path).at_look(2), open_storage(_settings(tmp_path, data_root).storage_url, None))
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    lease = QueueLease(study, seconds=100.0)
    lease.hold()
    first = study.user_attrs[QUEUE_OPEN_ATTR]
    clock[0] += 24.0
    lease.renew()
    assert study.user_attrs[QUEUE_OPEN_ATTR] == first  # not yet due
    clock[0] += 1.0
    lease.renew()
    assert study.user_attrs[QUEUE_OPEN_ATTR] > first and queue_open(study)


def test_a_worker_that_ended_is_started_again_with_its_command(tmp_path: Path) -> None:
    from rich.console import Console

    from dropout_lab.runners.launch import RunOptions, StudyWorkers
    from dropout_lab.runners.processes import start_workers

    spec = _spec(tmp_path)
    workers = StudyWorkers(spec, "lease.yaml", RunOptions(results_dir=str(tmp_path)), Console(quiet=True))
    workers.log = open(tmp_path / "workers.log", "a")
    with workers.log:
        workers.workers = start_workers([["sh", "-c", "exit 3"], ["sleep", "30"]], workers.log)
        lost, staying = workers.workers
        lost.process.wait(timeout=30)
        workers.restart_ended()
        again, still = workers.workers
        assert still is staying and again.index == 0 and again.pid != lost.pid and again.command == lost.command
        assert again.process.wait(timeout=30) == 3  # the same command ran again
        staying.process.kill()
        staying.process.wait()
    log = (tmp_path / "workers.log").read_text()
    assert f"worker 0 (pid {lost.pid}) ended: exit status 3" in log
    assert f"worker 0 restarted: pid {again.pid} (was pid {lost.pid}, exit status 3)" in log
