"""The ``dropout-lab`` command: single runs, multiruns over comma lists, and one-line errors."""

import json
import subprocess
import sys
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


def test_hydra_commands_get_their_arguments_untouched() -> None:
    from dropout_lab.cli.parser import parse

    argv = ["--multirun", "+key=value", "~key", "-m", "--cfg", "job", "model=scratch,concise", "--", "x"]
    assert parse(["train", *argv]).overrides == argv
    assert parse(["worker", "study=demo", "--help"]).overrides == ["study=demo", "--help"]


@pytest.mark.parametrize("action", ["run", "status", "export", "show", "report"])
def test_every_study_action_takes_name_and_fields_around_its_options(action: str) -> None:
    from dropout_lab.cli.parser import parse

    option = {"run": ["--jobs", "2"], "status": ["--storage", "sqlite:///x.db"], "export": ["--out", "o"],
              "show": [], "report": ["--reports-dir", "r"]}[action]
    args = parse(["study", action, "ex1_rates", "seeds=[0,1]", *option, "epochs=2"])
    assert (args.action, args.name, args.fields) == (action, "ex1_rates", ["seeds=[0,1]", "epochs=2"])


def test_usage_errors_name_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    from dropout_lab.cli import main

    assert main(["study", "show", "demo", "--jobs", "2"]) == 2
    assert "dropout-lab study show: error: unrecognized arguments: --jobs" in capsys.readouterr().err
    assert main(["runs", "a", "b"]) == 2
    assert "dropout-lab runs: error: unrecognized arguments: b" in capsys.readouterr().err
    assert main([]) == 2
    assert "commands:" in capsys.readouterr().out


def test_help_is_argparse_and_lists_every_command_and_option(capsys: pytest.CaptureFixture[str]) -> None:
    from dropout_lab.cli import main
    from dropout_lab.cli.parser import COMMANDS
    from dropout_lab.config.paths import STUDIES_DIR

    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert top.startswith("usage: dropout-lab [-h] COMMAND ...") and all(f"\n    {c} " in top for c in COMMANDS)
    assert main(["study", "run", "--help"]) == 0
    run = capsys.readouterr().out
    assert f"a study in {STUDIES_DIR}" in run and "'local': one process per worker (default)" in run
    assert all(option in run for option in ("--jobs", "--heartbeat", "--launcher", "--population-precision",
                                            "--override", "--storage", "--results-dir"))


def test_help_imports_neither_hydra_nor_optuna() -> None:
    code = ("import sys; from dropout_lab.cli import main; code = main(['--help']); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'hydra', 'optuna', 'torch'}), code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("[] 0"), out.stderr


@pytest.mark.slow
def test_train_help_is_hydras(run_cli) -> None:
    out = run_cli("train", "--help")
    assert out.returncode == 0 and "== Configuration groups ==" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("args", "expected"), [
    (["study", "run", "nonexistent"], "error: unknown study 'nonexistent'"),
    (["study", "run", "demo", "seedz=1"], "seedz=1 is invalid: unknown field 'seedz'"),
    (["train", "experiment=smoke", "model.dropout_1=1.5"], "error: model.dropout_1=1.5 is invalid"),
    (["train", "experiment=smoke", "optim.lr=-1"], "error: optim.lr=-1.0 is invalid"),
    (["train", "experiment=smoke", "seed=${oc.env:DROPOUT_LAB_NO_SUCH_VAR}"], "error: seed='${oc.env:"),
    (["worker"], "error: study='???' is invalid"),
    (["evaluate", "/nonexistent"], "error: no model.pt in /nonexistent"),
    (["dashboard", "--storage", "bogus://x"], "error: storage 'bogus://x' is not supported"),
])
def test_refusals_are_one_line_without_traceback(run_cli, monkeypatch: pytest.MonkeyPatch, args: list[str],
                                                 expected: str) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    out = run_cli(*args)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode != 0 and len(errors) == 1 and expected in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.slow
def test_hydras_own_config_errors_have_no_traceback(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    out = run_cli("train", "model=resnet")
    assert out.returncode != 0 and "Could not find 'model/resnet'" in out.stderr and "Traceback" not in out.stderr
