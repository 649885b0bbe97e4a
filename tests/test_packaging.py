"""The wheel: installed (not editable) into a fresh venv, it trains and runs studies from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _venv_with_wheel(tmp_path: Path) -> Path:
    """A throw-away venv that sees this environment's packages (a .pth line) and holds the wheel, without deps."""
    env = {**os.environ}
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the working tree
    for folder in ("src", "conf", "studies"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, source],
         cwd=tmp_path, env=env)
    (wheel,) = wheels.glob("dropout_lab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # Every config and study file, mapped from the top-level conf/ and studies/ (nothing else from there).
    top = {f"dropout_lab/{path.relative_to(ROOT).as_posix()}"
           for folder in ("conf", "studies") for path in (ROOT / folder).rglob("*.yaml")}
    assert {"dropout_lab/conf/train.yaml", "dropout_lab/conf/noise/gamma.yaml", "dropout_lab/studies/demo.yaml"} <= top
    assert top == {n for n in names if n.startswith(("dropout_lab/conf/", "dropout_lab/studies/"))}
    assert {"dropout_lab/py.typed", "hydra_plugins/dropout_lab_optuna_sweeper/__init__.py"} <= names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=env).stdout.strip())
    (site / "project_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
         cwd=tmp_path, env=env)
    return venv


def test_the_package_list_names_every_package_under_src() -> None:
    """``pyproject.toml`` lists packages explicitly (a find directive cannot add the mapped conf/ and studies/)."""
    import tomllib

    from setuptools import find_namespace_packages

    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = find_namespace_packages(str(ROOT / "src"), include=["dropout_lab*", "hydra_plugins*"])
    assert sorted(setuptools_cfg["packages"]) == sorted([*found, "dropout_lab.conf", "dropout_lab.studies"])
    assert setuptools_cfg["package-dir"] == {"": "src", "dropout_lab.conf": "conf", "dropout_lab.studies": "studies"}


@pytest.mark.slow
def test_installed_wheel_trains_and_runs_studies_from_an_unrelated_folder(data_root: Path, tmp_path: Path) -> None:
    venv = _venv_with_wheel(tmp_path)
    work = tmp_path / "elsewhere"
    (work / "my_conf" / "experiment").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPOUT_LAB_") and k != "PYTHONPATH"}
    env["DROPOUT_LAB_DATA"] = str(data_root)
    where = _run([venv / "bin" / "python", "-c", "import dropout_lab; print(dropout_lab.__file__)"], work, env)
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel, not the source tree

    lab = venv / "bin" / "dropout-lab"
    _run([lab, "train", "experiment=smoke"], work, env)
    (record,) = (work / "results" / "runs" / "smoke").glob("*/run.json")
    assert json.loads(record.read_text())["status"] == "completed"
    store = f"sqlite:///{work / 'results' / 'studies.db'}"
    (trial,) = optuna.load_study(study_name="smoke", storage=store).get_trials(states=(TrialState.COMPLETE,))

    # A user's config folder: Hydra's --config-dir for train, a search-path entry in a user's study file.
    (work / "my_conf" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - smoke\nname: mine\nmodel:\n  dropout_1: 0.3\n")
    _run([lab, "train", "--config-dir", "my_conf", "experiment=mine"], work, env)
    (record,) = (work / "results" / "runs" / "mine").glob("*/run.json")
    assert json.loads(record.read_text())["config"]["model"]["dropout_1"] == 0.3
    (work / "my_study.yaml").write_text(yaml.safe_dump({
        "name": "my_study", "question": "q", "experiment": "mine", "epochs": 1, "seeds": [0],
        "overrides": [f"hydra.searchpath=[file://{work / 'my_conf'}]"], "grid": {"model": ["scratch"]}}))
    out = _run([lab, "study", "run", "my_study.yaml", "seeds=[0,1]"], work, env)
    assert "done=2" in out.stdout and "remaining=0" in out.stdout
    trials = optuna.load_study(study_name="my_study", storage=store).get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["seed"] for t in trials) == [0, 1]
    assert all(t.value > 0 for t in trials)

    out = _run([lab, "study", "run", "demo", "epochs=1", "seeds=[0]", "--override", "data=subset"], work, env)
    assert "done=2" in out.stdout and "remaining=0" in out.stdout
    assert (work / "results" / "studies" / "demo" / "workers.log").is_file()
