"""``dropout-lab dashboard`` serves optuna-dashboard over a study store."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

from conftest import CLI

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.slow  # a server in a subprocess


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, deadline: float, proc: subprocess.Popen) -> tuple[int, str]:
    """GET ``url``, retrying while the server starts (until ``deadline`` or until it exits)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_dashboard_serves_the_stores_studies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="dashboard_check", storage=url, direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("model.dropout_1", 0.0, 0.9), n_trials=2)
    port = _free_port()
    proc = subprocess.Popen([*CLI, "dashboard", "--storage", url, "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        status, body = _get(f"http://127.0.0.1:{port}/api/studies", time.monotonic() + 60, proc)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert status == 200 and '"dashboard_check"' in body, output


def test_dashboard_without_a_store_says_where_it_looked(tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "dashboard", "--results-dir", str(tmp_path / "nowhere")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and f"no study store at {tmp_path / 'nowhere' / 'studies.db'}" in out.stderr
    assert not (tmp_path / "nowhere").exists()
