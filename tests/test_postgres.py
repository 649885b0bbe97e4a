"""Many workers, one PostgreSQL store: two launchers started at once finish a study, each run once."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import CLI

pytestmark = pytest.mark.postgres


@pytest.mark.slow
def test_two_launchers_on_postgres_run_each_cell_once(postgres_url, data_root, tmp_path: Path) -> None:
    spec = tmp_path / "pg.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "pg", "question": "q", "experiment": "smoke", "epochs": 2,
        "grid": {"model": ["scratch", "concise"], "model.dropout_1": [0.1, 0.3, 0.5]}, "seeds": [0, 1]}))
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(tmp_path / "results")}
    cmd = [*CLI, "study", "run", str(spec), "--storage", postgres_url, "--heartbeat", "2"]
    hosts = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [h.communicate(timeout=400) for h in hosts]
    assert all(h.returncode == 0 for h in hosts), outputs
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    trials = study.get_trials()
    assert len(trials) == 12 and all(t.state == TrialState.COMPLETE for t in trials)
    cells = Counter(tuple(sorted(t.params.items())) for t in trials)
    assert len(cells) == 12 and set(cells.values()) == {1}
    workers = Counter(t.user_attrs["output_dir"] for t in trials)
    assert set(workers.values()) == {1}
