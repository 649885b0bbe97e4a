"""Studies on tiny budgets: grids, relaunch, crashes, tuning with pruning, failures and bad storage."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from conftest import CLI, heartbeat_age_s, process_gone, study_if_ready, wait_for

optuna.logging.set_verbosity(optuna.logging.WARNING)

GRID = {"question": "q", "experiment": "smoke", "epochs": 1,
        "grid": {"model": ["scratch", "concise"], "model.dropout_1": [0.2, 0.5]}, "seeds": [0, 1]}


@pytest.fixture
def write_spec(tmp_path: Path):
    def _write(name: str, **fields) -> str:
        path = tmp_path / "studies" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump({"name": name, **fields}))
        return str(path)
    return _write


def _study(tmp_path: Path, name: str, url: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url or f"sqlite:///{tmp_path / 'results' / 'studies.db'}")


def _completed_cells(study: optuna.Study) -> Counter:
    return Counter(tuple(sorted(t.params.items())) for t in study.get_trials(states=(TrialState.COMPLETE,)))


@pytest.mark.slow
def test_grid_study_completes_once_each_and_exports(run_cli, write_spec, tmp_path: Path) -> None:
    spec = write_spec("grid", **GRID)
    out = run_cli("study", "run", spec, "--jobs", "2")
    assert out.returncode == 0, out.stderr
    assert "done=8" in out.stdout and "remaining=0" in out.stdout
    cells = _completed_cells(_study(tmp_path, "grid"))
    assert len(cells) == 8 and set(cells.values()) == {1}
    trial = _study(tmp_path, "grid").trials[0]
    assert set(trial.params) == {"model", "model.dropout_1", "seed"}
    assert {"curves", "final", "config_hash", "wall_time_s"} <= set(trial.user_attrs)

    again = run_cli("study", "run", spec, "--jobs", "2")
    assert again.returncode == 0 and "nothing to run" in again.stderr
    assert len(_study(tmp_path, "grid").trials) == 8

    exported = run_cli("study", "export", spec, "--out", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    runs = pd.read_csv(tmp_path / "export" / "runs.csv")
    curves = pd.read_parquet(tmp_path / "export" / "curves.parquet")
    assert len(runs) == 8 and set(runs.status) == {"completed"}
    assert runs.groupby(["model", "model.dropout_1"]).seed.nunique().eq(2).all()
    assert len(curves) == 8 and {"epoch", "train_loss", "val_acc", "seed"} <= set(curves.columns)


@pytest.mark.slow
def test_killed_study_resumes_without_duplicates(data_root, write_spec, tmp_path: Path) -> None:
    spec = write_spec("killed", **{**GRID, "epochs": 40})
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(tmp_path / "results")}
    cmd = [*CLI, "study", "run", spec, "--jobs", "2", "--heartbeat", "1"]
    log_path = tmp_path / "first_launch.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True, stdout=log, stderr=log)

    def one_done_one_running() -> set[int]:
        assert proc.poll() is None, "the study ended before the kill: " + log_path.read_text()[-3000:]
        study = study_if_ready(tmp_path / "results" / "studies.db", "killed")
        trials = study.get_trials() if study is not None else []
        done = {t.number for t in trials if t.state == TrialState.COMPLETE}
        return done if done and any(t.state == TrialState.RUNNING for t in trials) else set()

    try:
        done_before = wait_for(one_done_one_running, "a finished run and one in progress")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner; its workers die with it
        proc.wait()
    workers = [int(pid) for pid in re.findall(r"started: pid (\d+)",
                                              (tmp_path / "results/studies/killed/workers.log").read_text())]
    wait_for(lambda: all(process_gone(pid) for pid in workers), "the workers to die with the runner", timeout=30)
    before = {t.number: t for t in _study(tmp_path, "killed").get_trials()}
    assert any(t.state == TrialState.RUNNING for t in before.values())

    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    study = _study(tmp_path, "killed")
    cells = _completed_cells(study)
    assert len(cells) == 8 and set(cells.values()) == {1}
    for number in done_before:  # completed runs were kept, not redone
        assert study.trials[number].state == TrialState.COMPLETE
        assert study.trials[number].value == before[number].value
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.slow
def test_worker_killed_right_after_its_claim_leaves_a_stale_run_that_is_requeued(tmp_path: Path) -> None:
    """The window between claiming a queued run and the heartbeat thread's first beat."""
    from dropout_lab.runners.grid_worker import GridQueue
    from dropout_lab.store.backends import open_storage
    from dropout_lab.store.claims import requeue_stale

    storage = open_storage(f"sqlite:///{tmp_path / 'claim.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="claim", storage=storage, direction="maximize")
    study.enqueue_trial({"x": 1.0})
    (trial_id,), size = GridQueue(study, storage, contextlib.nullcontext()).claim()  # then the worker dies:
    assert size == 1 and storage.get_trial(trial_id).state == TrialState.RUNNING  # no heartbeat thread starts

    def requeued() -> bool:  # what the next worker does each time it looks at the queue
        requeue_stale(study)
        return [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.WAITING]

    wait_for(requeued, "the run to be failed as stale and queued again", timeout=60)


GRACE_S = 1


def _relaunched_worker_step(url: str, start, claimed) -> None:  # start, claimed: multiprocessing objects
    from dropout_lab.runners.grid_worker import GridQueue
    from dropout_lab.store.backends import open_storage
    from dropout_lab.store.claims import queue_lock

    storage = open_storage(url, heartbeat_interval=1, grace_period=GRACE_S)
    study = optuna.load_study(study_name="stale", storage=storage)
    queue = GridQueue(study, storage, queue_lock(url))
    start.wait()  # all workers look at the queue at the same moment
    claimed.put(queue.claim()[0])


@pytest.mark.slow
def test_workers_noticing_a_stale_run_together_requeue_and_claim_it_once(tmp_path: Path) -> None:
    import multiprocessing

    from dropout_lab.runners.grid_worker import GridQueue
    from dropout_lab.store.backends import open_storage

    url = f"sqlite:///{tmp_path / 'stale.db'}"
    storage = open_storage(url, heartbeat_interval=1, grace_period=GRACE_S)
    study = optuna.create_study(study_name="stale", storage=storage, direction="maximize")
    study.enqueue_trial({"x": 1.0})
    assert GridQueue(study, storage, contextlib.nullcontext()).claim()[0]  # then its worker dies
    wait_for(lambda: heartbeat_age_s(tmp_path / "stale.db", "stale", 0) > GRACE_S, "the run to go stale", timeout=60)
    ctx = multiprocessing.get_context("fork")
    claimed, start = ctx.Queue(), ctx.Barrier(4)
    workers = [ctx.Process(target=_relaunched_worker_step, args=(url, start, claimed)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    results = [claimed.get(timeout=10) for _ in workers]
    assert sum(len(r) for r in results) == 1  # one worker got the re-queued run
    states = Counter(t.state for t in study.get_trials())
    assert states == Counter({TrialState.FAIL: 1, TrialState.RUNNING: 1})  # re-queued once, claimed once


@pytest.mark.slow
def test_a_run_killed_more_than_max_retry_times_ends_failed(run_cli, write_spec, tmp_path: Path) -> None:
    """Each claim's worker dies before its first beat; after MAX_RETRY re-queues the run stays failed."""
    from dropout_lab.config.study_spec import load_spec
    from dropout_lab.runners.grid_worker import GridQueue
    from dropout_lab.store.backends import default_storage_url, open_storage
    from dropout_lab.store.claims import queue_lock
    from dropout_lab.store.heartbeat import MAX_RETRY
    from dropout_lab.store.study_setup import prepare_study

    spec = write_spec("retries", **{**GRID, "grid": {"model.dropout_1": [0.2]}, "seeds": [0]})
    url = default_storage_url(tmp_path / "results")
    storage = open_storage(url, heartbeat_interval=1, grace_period=GRACE_S)
    study = prepare_study(load_spec(spec), storage)
    queue = GridQueue(study, storage, queue_lock(url))

    def claim() -> list[int]:  # what a worker does when it looks at the queue
        return queue.claim()[0]

    for attempt in range(MAX_RETRY + 1):  # the first run, then MAX_RETRY re-queued copies, each killed
        wait_for(claim, f"the run to be queued for attempt {attempt + 1}", timeout=60)

    def settled() -> bool:  # the last one goes stale and is failed, and nothing is queued again
        assert claim() == [], "the run was re-queued more than MAX_RETRY times"
        return not study.get_trials(states=(TrialState.RUNNING,))

    wait_for(settled, "the last attempt to be failed as stale", timeout=60)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * (MAX_RETRY + 1)
    assert trials[-1].system_attrs["retry_history"] == [t.number for t in trials[:-1]]
    status = run_cli("study", "status", spec)
    assert status.returncode == 0, status.stderr
    assert "failed=1" in status.stdout and "waiting=0" in status.stdout and "remaining=0" in status.stdout


@pytest.mark.slow
def test_journal_storage_runs_a_grid_study_to_completion(run_cli, write_spec, tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "journal" / "studies.log"
    url = f"journal://{journal}"  # journal:///PATH for an absolute PATH
    spec = write_spec("journal", **{**GRID, "grid": {"model.dropout_1": [0.2, 0.5]}})
    out = run_cli("study", "run", spec, "--jobs", "2", "--storage", url)
    assert out.returncode == 0, out.stderr
    assert "done=4" in out.stdout and "remaining=0" in out.stdout
    study = optuna.load_study(study_name="journal", storage=JournalStorage(JournalFileBackend(str(journal))))
    cells = _completed_cells(study)
    assert len(cells) == 4 and set(cells.values()) == {1}
    assert not (tmp_path / "results" / "studies.db").exists()  # nothing went to the default store
    status = run_cli("study", "status", spec, "--storage", url)
    assert status.returncode == 0 and "done=4" in status.stdout and "remaining=0" in status.stdout


#: Runs ``dropout-lab ARGS`` in a fresh interpreter, then names the heavy packages it imported.
IMPORT_PROBE = """
import sys
from dropout_lab.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = {m.split(".")[0] for m in sys.modules} & {"torch", "lightning", "pytorch_lightning", "torchvision"}
print("heavy imports:", ",".join(sorted(heavy)) or "none", file=sys.stderr)
sys.exit(code)
"""


def test_commands_that_do_not_train_import_neither_torch_nor_lightning(write_spec, tmp_path: Path) -> None:
    from dropout_lab.config.study_spec import load_spec
    from dropout_lab.store.backends import default_storage_url, open_storage
    from dropout_lab.store.study_setup import prepare_study

    spec = write_spec("light", **GRID)
    prepare_study(load_spec(spec), open_storage(default_storage_url(tmp_path / "results"), heartbeat_interval=None))
    env = {**os.environ, "DROPOUT_LAB_RESULTS": str(tmp_path / "results")}
    for args in (["--help"], ["study", "--help"], ["study", "show", spec], ["study", "status", spec],
                 ["study", "export", spec, "--out", str(tmp_path / "export")]):
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *args], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=120)
        assert out.returncode == 0, (args, out.stderr)
        assert "heavy imports: none" in out.stderr, (args, out.stderr[-2000:])
    assert "waiting=8" in out.stdout and (tmp_path / "export" / "runs.csv").exists()


@pytest.mark.slow
def test_tuning_prunes_and_resumes_toward_its_total(run_cli, write_spec, tmp_path: Path) -> None:
    space = {"optim.lr": {"type": "float", "low": 1e-4, "high": 0.5, "log": True}}
    common = dict(question="q", experiment="smoke", epochs=3, search_space=space, seeds=[0],
                  pruner="median", sampler="random")
    first = run_cli("study", "run", write_spec("tune", n_trials=7, **common))
    assert first.returncode == 0, first.stderr
    study = _study(tmp_path, "tune")
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 7
    assert study.get_trials(states=(TrialState.PRUNED,)), "nothing was pruned"
    assert all(len(t.intermediate_values) >= 1 for t in finished)
    # a run that reached its last epoch is complete, never pruned: it had spent its budget
    assert all(len(t.intermediate_values) < 3 for t in study.get_trials(states=(TrialState.PRUNED,)))
    assert all(len(t.intermediate_values) == 3 for t in study.get_trials(states=(TrialState.COMPLETE,)))

    resumed = run_cli("study", "run", write_spec("tune", n_trials=10, **common))
    assert resumed.returncode == 0, resumed.stderr
    study = _study(tmp_path, "tune")
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 10
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))


@pytest.mark.slow
def test_diverging_run_is_failed_with_reason_and_study_goes_on(run_cli, write_spec, tmp_path: Path) -> None:
    spec = write_spec("nan", question="q", experiment="smoke", epochs=1,
                      overrides=["model.dropout_2=0.0"],
                      grid={"optim.lr": [0.1, 50.0], "model.dropout_1": [0.0]}, seeds=[0])
    out = run_cli("study", "run", spec)
    assert "done=1" in out.stdout and "failed=1" in out.stdout
    study = _study(tmp_path, "nan")
    (failed,) = study.get_trials(states=(TrialState.FAIL,))
    assert failed.params["optim.lr"] == 50.0 and "diverged" in failed.user_attrs["reason"]
    status = run_cli("study", "status", spec)
    assert "failed=1" in status.stdout and "remaining=0" in status.stdout
    again = run_cli("study", "run", spec)
    assert "nothing to run" in again.stderr and len(_study(tmp_path, "nan").trials) == 2


@pytest.mark.slow
def test_bad_storage_urls_fail_before_training(run_cli, write_spec, tmp_path: Path) -> None:
    spec = write_spec("bad", **GRID)
    out = run_cli("study", "run", spec, "--storage", "mongodb://localhost/x")
    assert out.returncode == 2 and "storage 'mongodb://localhost/x' is not supported" in out.stderr
    unreachable = "postgresql://nobody@127.0.0.1:9/none"
    out = run_cli("study", "run", spec, "--storage", unreachable)
    assert out.returncode == 2 and f"cannot open storage {unreachable!r}" in out.stderr
    assert "Traceback" not in out.stderr
    assert not list((tmp_path / "results").rglob("run.json"))


def test_bad_study_files_are_refused(run_cli, write_spec) -> None:
    missing = run_cli("study", "run", write_spec("m", question="q", grid={"model": ["scratch"]}))
    assert missing.returncode == 2 and "missing required field(s): epochs" in missing.stderr
    wrong = run_cli("study", "run", write_spec("w", question="q", epochs="many", grid={"model": ["scratch"]}))
    assert wrong.returncode == 2 and "epochs" in wrong.stderr
    empty = run_cli("study", "run", write_spec("e", question="q", epochs=1))
    assert empty.returncode == 2 and "would run nothing" in empty.stderr
    unknown = run_cli("study", "status", "no_such_study")
    assert unknown.returncode == 2 and "unknown study 'no_such_study'" in unknown.stderr


@pytest.mark.slow
def test_submitit_launcher_runs_the_workers(run_cli, write_spec, tmp_path: Path) -> None:
    spec = write_spec("submitit", **{**GRID, "grid": {"model": ["scratch", "concise"]}})
    out = run_cli("study", "run", spec, "--jobs", "2", "--launcher", "submitit_local")
    assert out.returncode == 0, out.stderr
    cells = _completed_cells(_study(tmp_path, "submitit"))
    assert len(cells) == 4 and set(cells.values()) == {1}
    assert list((tmp_path / "results" / "workers").rglob("*submitit*")) or \
        list((tmp_path / "results" / "workers").rglob("*.pkl"))


def test_unwritable_results_folder_fails_before_any_run(run_cli, write_spec, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = run_cli("study", "run", write_spec("ro", **GRID), "--results-dir", str(blocker / "results"))
    assert out.returncode == 2 and f"folder {blocker / 'results'} is not writable" in out.stderr


def test_a_ctrl_c_hidden_behind_a_compose_error_stops_the_worker(monkeypatch, tmp_path: Path) -> None:
    """Seen once: Ctrl-C while Hydra composed a config surfaced as OmegaConf's ConfigKeyError from its clean-up,
    the run was failed as a bad config and the worker trained on. The interrupt must stop the worker instead
    (its session then records the interruption and re-queues the trial)."""
    from dropout_lab.runners import trial_runs

    def compose(overrides: list[str]) -> None:
        try:
            raise KeyboardInterrupt
        finally:
            raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'")

    monkeypatch.setattr(trial_runs, "compose_train_config", compose)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    finished: list = []
    with pytest.raises(KeyboardInterrupt):
        trial_runs.train_trials([trial_runs.TrialRun(trial, {}, [], str(tmp_path))], size=1, precision="fp32",
                                metric="val_acc", pruning=False, finish=lambda t, record: finished.append(record))
    assert finished == [] and "status" not in study.trials[0].user_attrs  # not stored as a failed config
