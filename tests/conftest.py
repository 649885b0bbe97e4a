"""Shared fixtures: composed configs on a real Fashion-MNIST subset, with outputs in tmp folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import optuna
import pytest
import sqlalchemy.exc
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dropout_lab.config import CONF_DIR, register_schemas
from dropout_lab.data.files import ensure_fashion_mnist
from pg_server import postgres_installed, throwaway_postgres

CLI = [sys.executable, "-m", "dropout_lab.cli"]
T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float = 120, every: float = 0.2) -> T:
    """Poll ``condition`` until it returns a true value (a non-empty list, True, ...) and return that value;
    fail after ``timeout`` s.

    For tests that wait for a state (a trial RUNNING, a heartbeat gone stale, a process gone)
    instead of sleeping for a time that a loaded machine may not honour.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def process_gone(pid: int) -> bool:
    """True if no process ``pid`` runs (absent from /proc, or a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # the state field follows the command's name


def kill_worker_and_finish(proc: subprocess.Popen, pid: int, output: Path) -> str:
    """SIGKILL worker ``pid`` (what the OOM killer does), wait for the study command ``proc``; its output.

    Asserts that the command still finished the study and reported the death.
    """
    try:
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = output.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "remaining=0" in text and f"(pid {pid}) killed by SIGKILL" in text
    return text


def heartbeat_age_s(db: Path, study: str, number: int) -> int | None:
    """Whole seconds since trial ``number`` of ``study`` last beat (None: no beat yet), as Optuna counts them
    on SQLite: its clock and granularity, so the trial is stale once this exceeds the grace period."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        row = conn.execute("SELECT strftime('%s', 'now') - strftime('%s', h.heartbeat) FROM trial_heartbeats h "
                           "JOIN trials t ON t.trial_id = h.trial_id JOIN studies s ON s.study_id = t.study_id "
                           "WHERE s.study_name = ? AND t.number = ?", (study, number)).fetchone()
    return None if row is None else int(row[0])




def study_if_ready(db: Path, name: str) -> optuna.Study | None:
    """Study ``name`` in the SQLite file ``db``, or None while another process is still creating it.

    A study process creates the database, its tables and the study one after another; a test that
    polls meanwhile can find the file without the study (``KeyError``) or with the schema half
    written (an SQLAlchemy error, e.g. both processes stamping Optuna's schema version at once).
    """
    if not db.exists():
        return None
    try:
        return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    except (KeyError, sqlalchemy.exc.SQLAlchemyError):
        return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that runs ``dropout-lab`` in a subprocess (the ``run_cli`` fixture) belongs to the slow tier."""
    for item in items:
        if "run_cli" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One unpacked, verified copy of the real data for the whole session."""
    root = tmp_path_factory.mktemp("fashion_mnist")
    ensure_fashion_mnist(root, download=False)
    return root


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server on loopback (``pg_server.py``), stopped after the module."""
    if not postgres_installed():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; `make test` installs it (Debian package postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with throwaway_postgres() as url:
        yield url


@pytest.fixture
def make_cfg(data_root: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/train.yaml`` with overrides, on the real subset unless told otherwise."""

    def _compose(*overrides: str, experiment: str | None = "smoke") -> DictConfig:
        base = [f"data.root={data_root}", f"results_dir={tmp_path / 'results'}"]
        if experiment:
            base.append(f"experiment={experiment}")
        register_schemas()
        with initialize_config_dir(config_dir=str(CONF_DIR)):
            return compose(config_name="train", overrides=[*base, *overrides])

    return _compose


@pytest.fixture
def run_cli(data_root: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``dropout-lab`` in a subprocess with data and results in test folders."""

    def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root),
               "DROPOUT_LAB_RESULTS": str(tmp_path / "results")}
        return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env,
                              timeout=timeout, cwd=tmp_path)

    return _run
