"""Ctrl-C during a study: the current run is marked failed and re-queued; a relaunch finishes the study."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import CLI, heartbeat_age_s, study_if_ready, wait_for

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _catch_sigint() -> None:
    """Undo an inherited SIG_IGN (a shell's background jobs start with SIGINT ignored, and Python then
    leaves it ignored), so that the study process sees Ctrl-C as in a terminal however pytest runs."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_sigint_marks_run_interrupted_and_relaunch_resumes(data_root, tmp_path: Path) -> None:
    spec = tmp_path / "sigint.yaml"
    spec.write_text(yaml.safe_dump({"name": "sigint", "question": "q", "experiment": "smoke", "epochs": 15,
                                    "grid": {"model.dropout_1": [0.2, 0.5]}, "seeds": [0, 1]}))
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(tmp_path / "results")}
    cmd = [*CLI, "study", "run", str(spec)]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True, preexec_fn=_catch_sigint,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db = tmp_path / "results" / "studies.db"

    def in_a_run() -> bool:  # a worker has claimed a run, beats for it and has started training it
        study = study_if_ready(db, "sigint")
        running = study.get_trials(states=(TrialState.RUNNING,)) if study is not None else []
        return any("worker" in t.user_attrs and heartbeat_age_s(db, "sigint", t.number) is not None for t in running)

    try:
        wait_for(in_a_run, "a run in progress")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the runner passes it to its workers
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert "relaunch the same command to resume" in output

    study = optuna.load_study(study_name="sigint", storage=f"sqlite:///{db}")
    interrupted = study.get_trials(states=(TrialState.FAIL,))
    assert interrupted and all("Interrupt" in t.user_attrs["reason"] or "SystemExit" in t.user_attrs["reason"]
                               for t in interrupted)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert study.get_trials(states=(TrialState.WAITING,)), "the interrupted run was not re-queued"

    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="sigint", storage=f"sqlite:///{db}")
    cells = Counter(tuple(sorted(t.params.items())) for t in study.get_trials(states=(TrialState.COMPLETE,)))
    assert len(cells) == 4 and set(cells.values()) == {1}
