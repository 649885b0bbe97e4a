"""Shared fixtures: composed configs on a real Fashion-MNIST subset, with outputs in tmp folders."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dropout_lab.config import CONF_DIR, register_schemas
from dropout_lab.data.files import ensure_fashion_mnist


CLI = [sys.executable, "-m", "dropout_lab.cli"]


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


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One unpacked, verified copy of the real data for the whole session."""
    root = tmp_path_factory.mktemp("fashion_mnist")
    ensure_fashion_mnist(root, download=False)
    return root


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
