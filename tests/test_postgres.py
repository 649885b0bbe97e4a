"""Many workers, one PostgreSQL store: two launchers started at once finish a study, each run once."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import CLI

pytestmark = pytest.mark.postgres


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on loopback, stopped after the module."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; `make test` installs it (Debian package postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="dropout-lab-pg-"))  # outside pytest's root-only folders
    data = base / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        os.chmod(base, 0o777)
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=50"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE lab"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/lab"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


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
