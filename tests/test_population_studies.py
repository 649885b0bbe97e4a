"""Populations in studies: ``study run --population``: packing, records, NaN members, pruning, fall-back, kills."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
from collections import Counter
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.trial import TrialState

from conftest import CLI, heartbeat_age_s, kill_worker_and_finish, process_gone, study_if_ready, wait_for
from dropout_lab.config.engine import engine_name, group_key, parse_population, per_run_reason
from dropout_lab.errors import InvalidValueError
from dropout_lab.store.run_tables import runs_table
from dropout_lab.store.trial_records import retry_history
from dropout_lab.training import sizing
from dropout_lab.training.fit import RunSpec, train_population
from dropout_lab.training.run_record import RunRecord, Status
from dropout_lab.training.sizing import auto_population_size, member_bytes

optuna.logging.set_verbosity(optuna.logging.WARNING)

CURVE_KEYS = ("train_loss", "val_loss", "val_acc")


@pytest.fixture
def write_spec(tmp_path: Path):
    def _write(name: str, **fields) -> str:
        path = tmp_path / "studies" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump({"name": name, "question": "q", "experiment": "smoke", **fields}))
        return str(path)
    return _write


def _study(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'results' / 'studies.db'}")


def _cell(trial) -> tuple:
    return tuple(sorted(trial.params.items()))


# The setting, the engine's name, compatibility and the auto rule (no training)


def test_population_setting_engine_names_and_groups() -> None:
    assert parse_population("auto") == "auto" and parse_population("AUTO") == "auto"
    assert parse_population(1) == 1 and parse_population("16") == 16
    for bad in (0, -2, "many", "1.5", True):
        with pytest.raises(InvalidValueError, match="^population="):
            parse_population(bad)
    assert engine_name(8, "bf16") == "population(K=8, bf16)"
    a = {"model": "scratch", "model.dropout_1": 0.2, "optim.lr": 0.1, "seed": 0}
    assert group_key(a) == group_key({**a, "model.dropout_1": 0.5, "seed": 3, "optim.momentum": 0.9})
    assert group_key(a) != group_key({**a, "model": "concise"})
    assert group_key(a) != group_key({**a, "model.num_hiddens_1": 128})


def test_runs_that_need_instruments_or_their_own_parts_are_per_run(make_cfg) -> None:
    assert per_run_reason(make_cfg("model=scratch")) is None
    assert per_run_reason(make_cfg("noise=dropconnect")) is None
    assert "monitor.enabled" in per_run_reason(make_cfg("monitor.enabled=true"))
    assert "test_time" in per_run_reason(make_cfg("test_time.enabled=true"))
    assert "logger" in per_run_reason(make_cfg("logger=csv"))


def test_auto_picks_k_from_the_device_cap_and_the_memory_budget(make_cfg, monkeypatch) -> None:
    cfg = make_cfg("trainer=cpu")
    per_member = member_bytes(cfg)
    assert 5e6 < per_member < 50e6  # the chapter's member: ~4 MB of parameters and state plus batches
    monkeypatch.setattr(sizing, "free_memory_bytes", lambda device: 100 * 2**30)
    assert auto_population_size(cfg, workers=2) == 8  # smoke runs use 1 thread: the CPU cap is 8
    assert auto_population_size(make_cfg("trainer=cpu", "threads=16"), workers=2) == 32  # 2 x threads
    monkeypatch.setattr(sizing, "free_memory_bytes", lambda device: int(2 * 3.5 * per_member))
    assert auto_population_size(cfg, workers=1) == 3  # half the free memory holds 3.5 members
    assert auto_population_size(cfg, workers=4) == 1  # never below 1


def test_bf16_populations_name_their_engine_and_stay_close_to_a_member_alone(make_cfg, tmp_path: Path) -> None:
    runs = [RunSpec(make_cfg("model=scratch", f"seed={s}", "optuna.record=false"), tmp_path / str(s)) for s in (0, 1)]
    pair = train_population(runs, precision="bf16")
    (alone,) = train_population(runs[1:], precision="bf16")
    assert {r.engine for r in pair} == {"population(K=2, bf16)"} and alone.engine == "population(K=1, bf16)"
    assert all(r.status is Status.COMPLETED and math.isfinite(r.final["test_loss"]) for r in pair)
    diff = max(abs(a[k] - b[k]) for a, b in zip(pair[1].curves, alone.curves, strict=True) for k in CURVE_KEYS)
    assert diff == 0, diff  # a member's numbers do not depend on its mates, in bf16 too


def test_the_report_design_says_which_engines_ran() -> None:
    import pandas as pd

    from dropout_lab.config.study_spec import load_spec
    from dropout_lab.reports.writer import design_lines

    runs = pd.DataFrame({"state": ["COMPLETE"] * 3, "wall_time_s": [1.0] * 3,
                         "engine": ["population(K=2, bf16)", "population(K=2, bf16)", "per-run"]})
    (line,) = [line for line in design_lines(load_spec("ex1_rates"), runs) if line.startswith("- engine:")]
    assert "`population(K=2, bf16)` (2 runs)" in line and "`per-run` (1 run)" in line


def test_the_report_flags_more_than_one_engine_and_precision() -> None:
    import pandas as pd

    from dropout_lab.reports.writer import engine_lines

    alike = pd.DataFrame({"engine": ["population(K=8, bf16)", "population(K=3, bf16)"]})
    assert engine_lines(alike)[-1] == "- engines and precisions: population, bf16 (2 runs)"
    mixed = pd.DataFrame({"engine": ["population(K=2, bf16)", "population(K=2, bf16)", "per-run", None]})
    line = engine_lines(mixed)[-1]
    assert line.startswith("- **engines and precisions: 2 found**: population, bf16 (2 runs); per-run, fp32 (1 run)")
    assert "--population 1" in line
    assert engine_lines(pd.DataFrame({"state": ["COMPLETE"]})) == []


def test_a_study_whose_arms_would_train_on_different_engines_is_refused(write_spec) -> None:
    from dropout_lab.config.engine import require_one_engine, study_engines
    from dropout_lab.config.study_grid import grid_cells
    from dropout_lab.config.study_spec import load_spec
    from dropout_lab.errors import DropoutLabError

    spec = load_spec(write_spec("mixed", epochs=1, overrides=["model=scratch"], seeds=[0, 1],
                                grid={"monitor.enabled": [False, True], "model.dropout_1": [0.2, 0.5]}))
    cells = grid_cells(spec)
    arms = study_engines(spec, cells, "4", "bf16")
    assert sorted((arm.label, arm.cells, arm.engine, arm.precision) for arm in arms) == [
        ("monitor.enabled=False", 4, "population", "bf16"), ("monitor.enabled=True", 4, "per-run", "fp32")]
    with pytest.raises(DropoutLabError, match="^study mixed: population=4 requested, but its arms would train on "
                                              "different engines") as refused:
        require_one_engine(spec, cells, "4", "bf16")
    assert "monitor.enabled=True (4 runs): per-run, fp32: monitor.enabled=true (the activation monitor" in str(
        refused.value) and "--population 1" in str(refused.value)
    assert {arm.engine for arm in require_one_engine(spec, cells, "1", "fp32")} == {"per-run"}
    alike = load_spec(write_spec("alike", epochs=1, seeds=[0, 1], grid={"model.dropout_1": [0.2, 0.5]}))
    (arm,) = require_one_engine(alike, grid_cells(alike), "auto", "fp32")
    assert (arm.label, arm.cells, arm.engine, arm.reason) == ("the study's base config", 4, "population", None)


def test_study_run_refuses_arms_on_different_engines_before_any_worker_starts(run_cli, write_spec,
                                                                             tmp_path: Path) -> None:
    spec = write_spec("mixed", epochs=1, grid={"monitor.enabled": [False, True]}, seeds=[0])
    out = run_cli("study", "run", spec, "--population", "2")
    message = " ".join(out.stderr.split())
    assert out.returncode == 2 and "arms would train on different engines" in message, out.stderr[-3000:]
    assert "monitor.enabled=True (1 run): per-run, fp32" in message and "--population 1" in message
    assert not (tmp_path / "results" / "studies" / "mixed" / "workers.log").exists()


# Grid studies


def test_grid_population_matches_per_run_fails_nan_members_alone_and_records_the_engine(
        run_cli, write_spec, tmp_path: Path) -> None:
    """Noise off: a population draws its masks from counter-based streams, a single run from the global RNG; the
    rest (init, batch order, layers, optimizer) is the per-run engine's."""
    grid = {"optim.momentum": [0.0, 0.5], "optim.lr": [0.1, 1e6]}
    fields = dict(epochs=2, overrides=["model=scratch", "model.dropout_1=0", "model.dropout_2=0"], grid=grid,
                  seeds=[0, 1])
    per_run = run_cli("study", "run", write_spec("per_run", **fields))
    fused = run_cli("study", "run", write_spec("fused", **fields), "--population", "8")
    assert per_run.returncode == 0 and fused.returncode == 0, fused.stderr[-3000:]
    assert "population engine (population=8, fp32)" in " ".join(fused.stderr.split())
    assert "done=4" in fused.stdout and "failed=4" in fused.stdout and "remaining=0" in fused.stdout
    log = (tmp_path / "results" / "studies" / "fused" / "workers.log").read_text()
    assert re.search(r"training trials \[0, 1, 2, 3, 4, 5, 6, 7\] as one population \(8 members, fp32\)", log)

    alone = {_cell(t): t for t in _study(tmp_path, "per_run").trials}
    for trial in _study(tmp_path, "fused").trials:
        record = RunRecord.from_trial_attrs(trial.user_attrs)
        assert record.engine == "population(K=8, fp32)" and record.config["seed"] == trial.params["seed"]
        in_file = RunRecord.read(trial.user_attrs["output_dir"])  # run.json holds the same record
        assert replace(in_file, wall_time_s=round(in_file.wall_time_s, 3)) == record
        assert trial.user_attrs["worker"]["pid"] > 0 and record.overrides[-1].startswith("threads=")
        reference = RunRecord.from_trial_attrs(alone[_cell(trial)].user_attrs)
        assert reference.engine == "per-run" and reference.config_hash == record.config_hash
        if trial.params["optim.lr"] > 1:  # diverged: failed with its reason after one epoch; mates went on
            assert trial.state == TrialState.FAIL and record.status == "failed" and len(record.curves) == 1
            assert record.reason.startswith("RunDivergedError: diverged: train_loss=")
            continue
        assert trial.state == TrialState.COMPLETE and record.status == "completed" and len(record.curves) == 2
        diff = max([abs(a[k] - b[k]) for a, b in zip(record.curves, reference.curves, strict=True) for k in CURVE_KEYS]
                   + [abs(record.final[k] - reference.final[k]) for k in record.final])
        assert diff <= 1e-4, (trial.params, diff)  # same init, batch order and optimizer as the per-run engine
    runs = runs_table(_study(tmp_path, "fused"))
    assert set(runs["engine"]) == {"population(K=8, fp32)"} and len(runs) == 8


def test_studies_that_need_the_monitor_fall_back_to_per_run_visibly(run_cli, write_spec, tmp_path: Path) -> None:
    spec = write_spec("monitored", epochs=1, overrides=["monitor.enabled=true"],
                      grid={"model.dropout_1": [0.2, 0.5]}, seeds=[0])
    out = run_cli("study", "run", spec, "--population", "auto", "--jobs", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "its runs use the per-run engine: monitor.enabled=true" in " ".join(out.stderr.split())
    assert "use the per-run engine: monitor.enabled=true" in (
        tmp_path / "results" / "studies" / "monitored" / "workers.log").read_text()
    trials = _study(tmp_path, "monitored").trials
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["engine"] for t in trials} == {"per-run"} and all(t.user_attrs["activations"] for t in trials)


def test_bad_population_settings_are_refused_naming_the_option(run_cli, write_spec) -> None:
    spec = write_spec("bad", epochs=1, grid={"model.dropout_1": [0.2]}, seeds=[0])
    out = run_cli("study", "run", spec, "--population", "0")
    assert out.returncode == 2 and "--population='0' is invalid: allowed an integer K >= 1" in out.stderr
    out = run_cli("study", "run", spec, "--population-precision", "fp8")
    assert out.returncode == 2 and "fp8" in out.stderr


# Tuning studies


def test_tuning_asks_k_trials_and_prunes_members_through_their_own_trials(run_cli, write_spec, tmp_path: Path) -> None:
    space = {"optim.lr": {"type": "float", "low": 1e-4, "high": 0.5, "log": True}}
    spec = write_spec("tune", epochs=3, search_space=space, n_trials=9, sampler="random", seeds=[0],
                      pruner={"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2})
    out = run_cli("study", "run", spec, "--population", "3")
    assert out.returncode == 0, out.stderr[-3000:]
    study = _study(tmp_path, "tune")
    assert len(study.trials) == 9 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    log = (tmp_path / "results" / "studies" / "tune" / "workers.log").read_text()
    assert len(re.findall(r"as one population \(3 members, fp32\)", log)) == 3
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, "nothing was pruned"
    for trial in study.trials:
        record = RunRecord.from_trial_attrs(trial.user_attrs)
        assert record.engine == "population(K=3, fp32)"
        # every epoch it trained was reported to its own trial, as the per-run pruning callback reports it
        assert trial.intermediate_values == {row["epoch"] - 1: row["val_acc"] for row in record.curves}
        if trial.state == TrialState.PRUNED:
            assert record.status == "pruned" and "pruned" in record.reason
            assert len(record.curves) < 3  # never pruned at its last epoch: that run had spent its budget
        else:
            assert record.status == "completed" and trial.value == record.final["val_acc"]


# A killed population worker


@pytest.mark.slow
def test_a_killed_population_worker_leaves_its_members_stale_and_each_is_redone_once(
        data_root: Path, tmp_path: Path) -> None:
    spec = tmp_path / "death.yaml"
    spec.write_text(yaml.safe_dump({"name": "death", "question": "q", "experiment": "smoke", "epochs": 60,
                                    "grid": {"model.dropout_1": [0.2, 0.5]}, "seeds": [0, 1, 2, 3]}))
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(tmp_path / "results")}
    db = tmp_path / "results" / "studies.db"
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.Popen([*CLI, "study", "run", str(spec), "--jobs", "2", "--population", "4",
                                 "--heartbeat", "1"], env=env, cwd=tmp_path, start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT)

    def population_in_training() -> tuple[int, list[int]] | None:
        """A worker holding two or more RUNNING trials (a population it claimed), beating for them."""
        study = study_if_ready(db, "death")
        by_pid: dict[int, list[int]] = {}
        for trial in study.get_trials(states=(TrialState.RUNNING,)) if study else []:
            if "worker" in trial.user_attrs and heartbeat_age_s(db, "death", trial.number) is not None:
                by_pid.setdefault(trial.user_attrs["worker"]["pid"], []).append(trial.number)
        return next(((pid, numbers) for pid, numbers in by_pid.items() if len(numbers) >= 2), None)

    try:
        pid, _ = wait_for(population_in_training, "a population of 2 or more in training")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    kill_worker_and_finish(proc, pid, tmp_path / "out.txt")

    study = _study(tmp_path, "death")
    trials = study.get_trials()
    victims = [t.number for t in trials if t.state == TrialState.FAIL]  # what the killed worker held
    assert len(victims) >= 2
    completed = Counter(_cell(t) for t in trials if t.state == TrialState.COMPLETE)
    assert len(completed) == 8 and set(completed.values()) == {1}, completed  # every cell exactly once
    for number in victims:  # every member of the killed population went stale and was redone once, elsewhere
        killed = study.trials[number]
        assert killed.user_attrs.get("worker", {"pid": pid})["pid"] == pid  # claimed (and marked) by it
        (retry,) = [t for t in trials if number in retry_history(t)]
        assert retry.state == TrialState.COMPLETE and retry.params == killed.params
        assert retry.user_attrs["worker"]["pid"] != pid and retry.user_attrs["engine"].startswith("population(K=")
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert process_gone(pid)


def test_worker_config_takes_the_population_settings() -> None:
    from dropout_lab.config.schema import WorkerConfig

    cfg = OmegaConf.merge(OmegaConf.structured(WorkerConfig), {"study": "x", "population": 8})
    assert cfg.population == "8" and cfg.population_precision == "fp32" and cfg.workers == 1
    assert json.loads(json.dumps(OmegaConf.to_container(cfg)))["population"] == "8"


def _catch_sigint() -> None:
    """Undo an inherited SIG_IGN, so the study process sees Ctrl-C as in a terminal (see test_interrupts.py)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_fails_and_requeues_every_member_and_a_relaunch_finishes(data_root: Path, tmp_path: Path) -> None:
    spec = tmp_path / "sigint.yaml"
    spec.write_text(yaml.safe_dump({"name": "sigint", "question": "q", "experiment": "smoke", "epochs": 60,
                                    "grid": {"model.dropout_1": [0.2, 0.5]}, "seeds": [0, 1]}))
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(tmp_path / "results")}
    cmd = [*CLI, "study", "run", str(spec), "--population", "4"]
    db = tmp_path / "results" / "studies.db"
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True, preexec_fn=_catch_sigint,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def population_in_training() -> list[int]:
        """The four trials of the one population, RUNNING with their worker recorded and beating."""
        study = study_if_ready(db, "sigint")
        running = study.get_trials(states=(TrialState.RUNNING,)) if study else []
        held = [t.number for t in running if "worker" in t.user_attrs and heartbeat_age_s(db, "sigint", t.number)
                is not None]
        return held if len(held) == 4 else []

    try:
        members = wait_for(population_in_training, "a population in training")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the runner passes it on to its worker
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0 and "relaunch the same command to resume" in output
    study = _study(tmp_path, "sigint")
    assert members == [0, 1, 2, 3]
    for number in members:  # every member: failed with the interruption as reason, its record stored, re-queued
        trial = study.trials[number]
        assert trial.state == TrialState.FAIL and trial.user_attrs["status"] == "interrupted"
        assert trial.user_attrs["reason"].startswith(("KeyboardInterrupt", "SystemExit"))
        # its record, when the interrupt came once training had started (before, the reason alone)
        assert trial.user_attrs.get("engine", "population(K=4, fp32)") == "population(K=4, fp32)"
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 4
    assert not study.get_trials(states=(TrialState.RUNNING,))

    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    completed = Counter(_cell(t) for t in _study(tmp_path, "sigint").get_trials(states=(TrialState.COMPLETE,)))
    assert len(completed) == 4 and set(completed.values()) == {1}
