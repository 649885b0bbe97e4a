"""The ``dropout-lab`` command: single runs, multiruns over comma lists, and one-line errors."""

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_single_run_with_overrides_writes_its_record(run_cli, tmp_path: Path) -> None:
    out = run_cli("train", "experiment=smoke", "model=scratch", "model.dropout_1=0.2", "seed=3")
    assert out.returncode == 0, out.stderr
    (record,) = (tmp_path / "results" / "runs" / "smoke").rglob("run.json")
    saved = json.loads(record.read_text())
    assert saved["config"]["model"]["dropout_1"] == 0.2 and saved["seed"] == 3
    assert saved["overrides"] == ["experiment=smoke", "model=scratch", "model.dropout_1=0.2", "seed=3"]


@pytest.mark.slow
def test_multirun_over_comma_lists_runs_every_combination(run_cli, tmp_path: Path) -> None:
    out = run_cli("train", "--multirun", "experiment=smoke", "model=scratch,concise", "seed=1,2")
    assert out.returncode == 0, out.stderr
    records = sorted((tmp_path / "results" / "multirun" / "smoke").rglob("run.json"))
    pairs = {(json.loads(p.read_text())["config"]["model"]["_target_"].rsplit(".", 1)[-1],
              json.loads(p.read_text())["seed"]) for p in records}
    assert pairs == {(m, s) for m in ("DropoutMLPScratch", "DropoutMLPConcise") for s in (1, 2)}
    table = run_cli("runs", str(records[0].parents[1]))
    assert table.returncode == 0 and table.stdout.count("completed") == 4

    again = run_cli("train", "--multirun", "experiment=smoke", "model=scratch,concise", "seed=1,2")
    assert again.returncode == 0 and again.stderr.count("not rerun") + again.stdout.count("not rerun") == 4
    assert len(list((tmp_path / "results" / "multirun" / "smoke").rglob("run.json"))) == 4
    import optuna

    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{tmp_path / 'results' / 'studies.db'}")
    assert len(study.trials) == 4 and {t.params["seed"] for t in study.trials} == {1, 2}


@pytest.mark.slow
def test_multirun_goes_on_after_a_bad_run(run_cli, tmp_path: Path) -> None:
    out = run_cli("train", "--multirun", "experiment=smoke", "model.dropout_1=1.5,0.2")
    assert out.returncode == 0, out.stderr
    assert "model.dropout_1=1.5 is invalid" in out.stderr + out.stdout
    records = list((tmp_path / "results" / "multirun" / "smoke").rglob("run.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["status"] == "completed"


@pytest.mark.slow
def test_bad_rate_gives_one_clear_line(run_cli) -> None:
    out = run_cli("train", "experiment=smoke", "model.dropout_1=1.5")
    assert out.returncode != 0
    assert "error: model.dropout_1=1.5 is invalid: allowed a number in [0, 1]" in out.stderr
    assert "Traceback" not in out.stderr


def test_misspelt_key_and_unknown_model_are_refused(run_cli) -> None:
    typo = run_cli("train", "experiment=smoke", "model.dropuot_1=0.2")
    assert typo.returncode != 0 and "dropuot_1" in typo.stderr and "Traceback" not in typo.stderr
    unknown = run_cli("train", "model=resnet")
    assert unknown.returncode != 0 and "Available options" in unknown.stderr
    assert "concise" in unknown.stderr and "scratch" in unknown.stderr


@pytest.mark.slow
def test_missing_data_is_explained(run_cli, tmp_path: Path) -> None:
    out = run_cli("train", "experiment=smoke", f"data.root={tmp_path / 'empty'}", "data.system_dir=null",
                  "data.download=false")
    assert out.returncode != 0 and "Fashion-MNIST not found" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_command_lists_commands(run_cli) -> None:
    out = run_cli("fly")
    assert out.returncode == 2 and "choose one of: train, worker, study, runs" in out.stderr
