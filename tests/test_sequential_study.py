"""``study run`` with a sequential seed design, end to end: it stops with the right verdicts and resumes after a kill.

Two small studies on the real data subset: one with a known difference (learning rate 0.1 against
0.0001 after two epochs), one with none (the chapter's two implementations of the same dropout net,
each on its own network).
"""

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
from optuna.trial import TrialState

from conftest import CLI, study_if_ready, wait_for
from dropout_lab.analysis.plan_verdicts import EQUIVALENT, HIGHER, plan_looks, plan_table, plan_verdicts
from dropout_lab.config.study_spec import load_spec
from dropout_lab.store.run_tables import runs_table

optuna.logging.set_verbosity(optuna.logging.WARNING)

pytestmark = pytest.mark.slow


def _plan(name: str, treatment: dict, control: dict, margin: float) -> dict:
    return {"primary": "test_acc_at_best_val", "comparisons": [
        {"name": name, "treatment": treatment, "control": control, "margin": margin,
         "why": "a test of the machinery: wide enough for a few seeds of a seconds-long run"}]}


KNOWN = {"name": "seq_known", "question": "Does lr 0.1 beat lr 0.0001 after two epochs?", "experiment": "smoke",
         "epochs": 2, "grid": {"optim.lr": [0.1, 0.0001]}, "seeds": {"first": 0, "min": 3, "max": 9, "batch": 3},
         "plan": _plan("lr 0.1 vs 0.0001", {"optim.lr": 0.1}, {"optim.lr": 0.0001}, 0.02)}
NONE = {"name": "seq_none", "question": "Do the two implementations of the chapter's net agree?",
        "experiment": "smoke", "epochs": 2, "grid": {"model": ["scratch", "concise"]},
        "seeds": {"first": 0, "min": 2, "max": 16, "batch": 2},
        "plan": _plan("scratch vs concise", {"model": "scratch"}, {"model": "concise"}, 0.08)}

TWO_LOOKS = {"name": "seq_two_looks", "question": "Do the two implementations agree within 0.1 pp?",
             "experiment": "smoke", "epochs": 1, "grid": {"model": ["scratch", "concise"]},
             "seeds": {"first": 0, "min": 2, "max": 4, "batch": 2},
             "plan": _plan("scratch vs concise", {"model": "scratch"}, {"model": "concise"}, 0.001)}


def _write(tmp_path: Path, fields: dict) -> Path:
    path = tmp_path / f"{fields['name']}.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


def _db(tmp_path: Path) -> Path:
    return tmp_path / "results" / "studies.db"


def _verdict(tmp_path: Path, spec_path: Path) -> tuple[str, int, list[int]]:
    """The plan's verdict from the stored runs, the seeds at its last look, and the seeds stored."""
    spec = load_spec(str(spec_path))
    assert spec.design is not None and spec.plan is not None
    study = optuna.load_study(study_name=spec.name, storage=f"sqlite:///{_db(tmp_path)}")
    runs = runs_table(study)
    stored = sorted(set(runs["seed"]))
    looks = [n for n in spec.design.looks() if n <= len(stored)]
    by_look = plan_looks(plan_table(runs), spec.plan, looks, spec.design.seeds(spec.design.max))
    (row,) = plan_verdicts(by_look, spec.plan, spec.design).itertuples()
    return str(row.verdict), looks[-1], stored


def _completed_once(tmp_path: Path, name: str) -> Counter:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{_db(tmp_path)}")
    return Counter(tuple(sorted(t.params.items())) for t in study.get_trials(states=(TrialState.COMPLETE,)))


def test_a_known_difference_is_decided_higher_and_stops_there(run_cli, tmp_path: Path) -> None:
    spec = _write(tmp_path, KNOWN)
    out = run_cli("study", "run", str(spec), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    verdict, n, stored = _verdict(tmp_path, spec)
    assert f"sequential=decided seeds={n} " in out.stdout and "undecided=0" in out.stdout
    assert verdict == HIGHER and stored == list(range(n))  # no seed beyond the deciding look was trained
    assert set(_completed_once(tmp_path, "seq_known").values()) == {1}

    again = run_cli("study", "run", str(spec), timeout=300)  # a relaunch replays the looks and trains nothing
    assert again.returncode == 0 and f"sequential=decided seeds={n} " in again.stdout
    assert sum(_completed_once(tmp_path, "seq_known").values()) == 2 * n


def test_no_difference_adds_seeds_until_equivalent_and_resumes_after_a_kill(data_root: Path, tmp_path: Path) -> None:
    spec = _write(tmp_path, NONE)
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(tmp_path / "results")}
    # per-run: each net draws its own masks (torch.rand against nn.Dropout), the same distribution; a fused
    # population would train both as one stacked net, with equal results and no noise to decide on
    command = [*CLI, "study", "run", str(spec), "--heartbeat", "1", "--population", "1"]
    with open(tmp_path / "first.out", "w") as out:
        proc = subprocess.Popen(command, env=env, cwd=tmp_path, start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT)

    def second_look_running() -> bool:
        study = study_if_ready(_db(tmp_path), "seq_none")
        return study is not None and any(t.params.get("seed", 0) >= 2 for t in
                                         study.get_trials(states=(TrialState.RUNNING,)))

    try:
        wait_for(second_look_running, "a run of the second look in progress", timeout=300)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, in the middle of look 2
        proc.wait()

    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sequential=decided" in done.stdout, done.stdout + done.stderr[-3000:]
    verdict, n, stored = _verdict(tmp_path, spec)
    assert verdict == EQUIVALENT and n > 2
    assert stored == list(range(n))  # exactly the seeds of the deciding look
    completed = _completed_once(tmp_path, "seq_none")
    assert len(completed) == 2 * n and set(completed.values()) == {1}  # nothing lost, nothing run twice


def test_the_workers_start_once_and_stay_through_the_looks(run_cli, tmp_path: Path) -> None:
    spec = _write(tmp_path, TWO_LOOKS)  # 2 seeds cannot decide a 0.1 pp margin: the study must add a look
    out = run_cli("study", "run", str(spec), "--jobs", "2", "--population", "1", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "look 1 (2 seeds)" in out.stderr and "look 2 (4 seeds)" in out.stderr, out.stderr[-3000:]
    log = (tmp_path / "results" / "studies" / "seq_two_looks" / "workers.log").read_text()
    started = {int(pid) for pid in re.findall(r"worker \d started: pid (\d+)", log)}
    assert len(started) == 2 and log.count("started: pid") == 2  # one start per worker, not per look
    assert len(re.findall(r"ended: ok", log)) == 2  # both left by themselves once the queue closed
    study = optuna.load_study(study_name="seq_two_looks", storage=f"sqlite:///{_db(tmp_path)}")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["seed"] for t in done) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert {t.user_attrs["worker"]["pid"] for t in done} <= started  # both looks' runs, by the same workers
