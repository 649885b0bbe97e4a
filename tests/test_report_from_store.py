"""A report and an export made on a machine that has only the database: no run folders, no torch.

Also the ``study report`` and ``study show`` commands' output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from conftest import CLI
from dropout_lab.config.study_grid import multirun_command
from dropout_lab.config.study_spec import load_spec
from dropout_lab.training.run_record import OUTPUT_DIR_ATTR, TRIAL_ATTR_KEYS

optuna.logging.set_verbosity(optuna.logging.WARNING)

NAME = "store_only"
#: ex2's question at a smoke budget: a grid over two overlays, told apart in the report by their stored rates.
SPEC = {"name": NAME, "question": "Does dropout pay? (tiny)", "epochs": 1, "seeds": [0, 1],
        "overrides": ["data=subset", "threads=1"], "grid": {"experiment": ["chapter", "no_dropout"]},
        "analysis": "epochs"}
#: Importing either of these fails in the report and export processes: neither command may need them.
BLOCKED = ("torch", "lightning")


@pytest.fixture(scope="module")
def store_only(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the tiny study, then delete its run folders (the ``run.json`` copies): only studies.db is left."""
    root = tmp_path_factory.mktemp("store_only")
    (root / "study.yaml").write_text(yaml.safe_dump(SPEC))
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(root / "results")}
    out = subprocess.run([*CLI, "study", "run", str(root / "study.yaml")], env=env, cwd=root, check=False,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted((root / "results" / "studies" / NAME).glob("trial_*"))
    assert len(runs) == 4 and all((folder / "run.json").is_file() for folder in runs)
    for folder in runs:
        shutil.rmtree(folder)
    return root


def _without_torch(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``dropout-lab ARGS`` in ``root`` where importing torch or Lightning raises ImportError."""
    blocker = root / "blocked_modules"
    for name in BLOCKED:
        (blocker / name).mkdir(parents=True, exist_ok=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]),
           "DROPOUT_LAB_RESULTS": str(root / "results")}
    return subprocess.run([*CLI, *args], env=env, cwd=root, check=False, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_every_trial_holds_the_whole_record(store_only: Path) -> None:
    study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{store_only / 'results' / 'studies.db'}")
    for trial in study.trials:
        assert {*TRIAL_ATTR_KEYS, OUTPUT_DIR_ATTR} <= set(trial.user_attrs)  # workers may add their own keys
        attrs = trial.user_attrs
        assert attrs["config"]["name"] == trial.params["experiment"] and attrs["seed"] == trial.params["seed"]
        assert attrs["config"]["trainer"]["max_epochs"] == 1 and attrs["versions"]["torch"]
        assert len(attrs["curves"]) == 1 and attrs["status"] == "completed" and attrs["host"]


@pytest.mark.slow
def test_report_and_export_from_the_database_alone(store_only: Path) -> None:
    report = _without_torch(store_only, "study", "report", "study.yaml", "--reports-dir", "reports")
    assert report.returncode == 0, report.stderr[-3000:]
    readme = store_only / "reports" / NAME / "README.md"
    assert f"report written to {Path('reports') / NAME / 'README.md'}" in report.stdout
    assert "done=4" in report.stdout and "remaining=0" in report.stdout
    conclusion = readme.read_text().split("## Conclusion")[1].split("## Notes")[0]
    # The configurations are named by their stored rates, not by what the overlays are known to contain.
    assert "- dropout 0.5/0.5 vs no dropout over 1 epochs:" in conclusion
    runs = pd.read_csv(store_only / "reports" / NAME / "runs.csv")
    assert {"model.dropout_1", "optim.weight_decay", "name", "trainer.max_epochs"} <= set(runs.columns)

    export = _without_torch(store_only, "study", "export", "study.yaml", "--out", "export")
    assert export.returncode == 0, export.stderr[-3000:]
    table = pd.read_parquet(store_only / "export" / "runs.parquet").sort_values(["name", "seed"])
    assert table["name"].tolist() == ["chapter", "chapter", "no_dropout", "no_dropout"]
    assert table["model.dropout_1"].tolist() == [0.5, 0.5, 0.0, 0.0]
    assert table["model.dropout_2"].tolist() == [0.5, 0.5, 0.0, 0.0]
    assert (table["trainer.max_epochs"] == 1).all() and (table["epochs_run"] == 1).all()
    assert (table["data.batch_size"] == 256).all() and table["versions.torch"].notna().all()
    curves = pd.read_csv(store_only / "export" / "curves.csv")
    assert len(curves) == 4 and {"trial", "seed", "experiment", "epoch", "val_acc"} <= set(curves.columns)


def test_report_of_a_study_not_in_the_store(tmp_path: Path) -> None:
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump({**SPEC, "name": "missing"}))
    out = _without_torch(tmp_path, "study", "report", "missing.yaml")
    assert out.returncode == 2
    assert out.stderr.startswith("error: study 'missing' is not in sqlite:///") and "run it first" in out.stderr


def test_show_prints_the_definition_and_the_plain_multirun(tmp_path: Path) -> None:
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(SPEC))
    out = _without_torch(tmp_path, "study", "show", "study.yaml")
    assert out.returncode == 0, out.stderr
    command = ("dropout-lab train --multirun data=subset threads=1 trainer.max_epochs=1 "
               "experiment=chapter,no_dropout seed=0,1")
    assert multirun_command(load_spec(str(tmp_path / "study.yaml"))) == command
    lines = [line.strip() for line in out.stdout.splitlines()]
    assert lines[0] == f"{NAME}: Does dropout pay? (tiny)" and "total runs: 4" in lines and command in lines

    tuning = {**SPEC, "name": "tuned", "grid": {}, "n_trials": 3, "analysis": "tuning",
              "search_space": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.5, "log": True}}}
    (tmp_path / "tuned.yaml").write_text(yaml.safe_dump(tuning))
    out = _without_torch(tmp_path, "study", "show", "tuned.yaml")
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    assert lines[0] == "tuned: Does dropout pay? (tiny)" and "total runs: 3" in lines
    assert not any(line.startswith("dropout-lab train --multirun") for line in lines)  # no grid to run as one
