"""The ask/tell core (``runners/tuner.py``) and sampler/pruner configs of study files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from conftest import heartbeat_age_s, wait_for
from dropout_lab.config.samplers import build_pruner, build_sampler
from dropout_lab.runners.tuner import Tuner, sampler_seed
from dropout_lab.training.run_record import RunRecord, Status

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"x": FloatDistribution(0.0, 1.0)}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def ended(value: float | None = None, status: Status = Status.COMPLETED) -> RunRecord:
    """A run's record as a worker tells it: ``val_acc`` (the tuner's metric) is ``value``."""
    return RunRecord(config={}, seed=0, config_hash="", status=status,
                     final={} if value is None else {"val_acc": value})


def _tuner(db: Path, n_trials: int = 4, heartbeat: int | None = 1, **kwargs) -> Tuner:
    return Tuner.open(f"sqlite:///{db}", "t", direction="maximize", space=kwargs.pop("space", SPACE),
                      n_trials=n_trials, sampler=kwargs.pop("sampler", "random"), pruner="none",
                      heartbeat_interval=heartbeat, poll_s=0.2, **kwargs)


@pytest.mark.slow
def test_a_beating_trial_is_never_failed_and_a_stale_one_is_requeued_and_taken(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    live, dead, other = _tuner(db, 3), _tuner(db, 3, worker_index=1), _tuner(db, 3, worker_index=2)
    (beating,) = live.ask()
    (lost,) = dead.ask()
    assert heartbeat_age_s(db, "t", beating.number) is not None  # beats from the ask on
    dead.heartbeat.close()  # its process "dies": no tell, no more beats
    (fresh,) = other.ask(5)  # the one free slot of 3 (two are running)
    other.tell(fresh, [ended(0.5)])
    # Nothing is free until the dead worker's trial goes stale (grace: 4 beats); then it comes back.
    (retried,) = wait_for(lambda: other.ask(), "the stale trial re-queued", timeout=60)
    assert retried.params == lost.params and retried.number != lost.number
    states = {t.number: t.state for t in optuna.load_study(study_name="t", storage=f"sqlite:///{db}").trials}
    assert states[lost.number] == TrialState.FAIL
    assert states[beating.number] == TrialState.RUNNING  # it beat through the same grace period
    live.tell(beating, [ended(status=Status.PRUNED)])
    other.tell(retried, [ended(float("nan"))])  # a NaN metric fails the trial
    assert other.remaining() == 1 and other.ask(2) and not other.ask(2)
    live.close()
    other.close()  # its asked, untold trial is failed and re-queued for the next worker
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{db}")
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1 and len(study.get_trials(states=FINISHED)) == 2


def test_relaunches_and_workers_draw_new_candidates_and_a_history_repeats_them(tmp_path: Path) -> None:
    def draws(db: Path, workers: list[int]) -> list[float]:
        values = []
        for worker in workers:  # one tuner per worker or relaunch, in turn
            with _tuner(db, 10, heartbeat=None, worker_index=worker) as tuner:
                for trial in tuner.ask(2):
                    tuner.tell(trial, [ended(trial.params["x"])])
                    values.append(trial.params["x"])
        return values

    first = draws(tmp_path / "a.db", [0, 0, 1])
    assert len(set(first)) == 6
    assert draws(tmp_path / "b.db", [0, 0, 1]) == first  # same history, same seeds, same candidates
    assert sampler_seed(0, 1, 0) != sampler_seed(0, 0, 0) != sampler_seed(0, 0, 2)


def test_grid_sampler_ends_the_loop_when_its_grid_is_done(tmp_path: Path) -> None:
    grid = {"c": CategoricalDistribution([1, 2, 3])}
    with _tuner(tmp_path / "g.db", 10, heartbeat=None, space=grid, sampler="grid") as tuner:
        def evaluate(trials: list[optuna.Trial]) -> None:
            for trial in trials:
                tuner.tell(trial, [ended(float(trial.params["c"]))])

        assert tuner.run(evaluate, batch=2) == 3
        assert tuner.remaining() == 0
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'g.db'}")
    assert sorted(t.params["c"] for t in study.trials) == [1, 2, 3]


def test_target_configs_are_instantiated_with_their_arguments() -> None:
    sampler = build_sampler({"_target_": "optuna.samplers.TPESampler", "n_startup_trials": 2, "seed": 7}, seed=9)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    pruner = build_pruner("hyperband", max_epochs=7)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    with pytest.warns(optuna.exceptions.ExperimentalWarning, match="PatientPruner"):  # Optuna's own mark
        wrapped = build_pruner({"_target_": "optuna.pruners.PatientPruner", "patience": 2,
                                "wrapped_pruner": {"_target_": "optuna.pruners.MedianPruner"}})
    assert isinstance(wrapped, optuna.pruners.PatientPruner)


@pytest.fixture
def tuning_spec(tmp_path: Path):
    def _write(**fields) -> str:
        path = tmp_path / "tune.yaml"
        path.write_text(yaml.safe_dump({
            "name": "tune", "question": "q", "experiment": "smoke", "epochs": 2, "seeds": [0], "n_trials": 3,
            "search_space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 0.5, "log": True}}, **fields}))
        return str(path)
    return _write


def test_unknown_names_in_a_study_file_or_on_the_command_line_are_refused(run_cli, tuning_spec, tmp_path) -> None:
    out = run_cli("study", "run", tuning_spec(sampler="tpee"))
    assert out.returncode == 2
    assert "sampler='tpee' is invalid: allowed one of tpe, random, grid, cmaes, gp" in out.stderr
    out = run_cli("study", "run", tuning_spec(), "pruner=medain")
    assert out.returncode == 2
    assert "pruner='medain' is invalid: allowed one of median, hyperband, successive_halving, none" in out.stderr
    out = run_cli("study", "run", tuning_spec(), "sampler={_target_:os.system,command:ls}")
    assert out.returncode == 2 and "sampler._target_='os.system' is invalid" in out.stderr
    assert not (tmp_path / "results" / "studies").exists()  # refused before anything ran


@pytest.mark.slow
def test_study_file_takes_target_configs_and_hyperband(run_cli, tuning_spec, tmp_path: Path) -> None:
    spec = tuning_spec(sampler={"_target_": "optuna.samplers.TPESampler", "n_startup_trials": 2, "multivariate": True},
                       pruner="hyperband")
    out = run_cli("study", "run", spec)
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{tmp_path / 'results' / 'studies.db'}")
    assert len(study.get_trials(states=FINISHED)) == 3 and not study.get_trials(states=(TrialState.FAIL,))
    assert study.user_attrs["pruner"]["max_resource"] == 2  # Hyperband's budget: the study's epochs
    assert study.user_attrs["sampler"]["n_startup_trials"] == 2
    assert all(t.intermediate_values for t in study.trials)


# Robust tuning: every trial trains the study's seeds as one fused population; its value is their mean


def _robust_study(tmp_path: Path, data_root: Path, name: str, pruner: object, n_trials: int,
                  population: int = 1) -> optuna.Study:
    """A tiny tuning study (3 seeds, 2 epochs, the real subset) run through the real tuning worker."""
    from dropout_lab.config.study_spec import load_spec
    from dropout_lab.runners.settings import WorkerSettings
    from dropout_lab.runners.worker import run_worker
    from dropout_lab.store.backends import open_storage
    from dropout_lab.store.study_setup import prepare_study

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "question": "q", "experiment": "smoke", "epochs": 2, "seeds": [700, 701, 702],
        "n_trials": n_trials, "sampler": "random", "pruner": pruner, "plan": {"primary": "test_acc_at_best_val"},
        "search_space": {"optim.lr": {"type": "float", "low": 0.05, "high": 0.3, "log": True}}}))
    spec = load_spec(str(path))
    assert spec.objective == "best_val_acc" and spec.direction == "maximize"
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    prepare_study(spec, open_storage(url, heartbeat_interval=None))
    settings = WorkerSettings(storage_url=url, results_dir=str(tmp_path / "results"), heartbeat_interval=None,
                              extra_overrides=[f"data.root={data_root}", "threads=1"], population=population)
    assert run_worker(spec, settings) == n_trials
    return optuna.load_study(study_name=name, storage=url)


def test_a_trial_is_its_seeds_trained_as_one_population_and_its_value_their_mean(
        tmp_path: Path, data_root: Path) -> None:
    from dropout_lab.store.run_tables import curves_table, runs_table
    from dropout_lab.store.trial_records import stored_records

    study = _robust_study(tmp_path, data_root, "robust", "none", n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for trial in study.trials:
        records = stored_records(trial.user_attrs)
        assert records is not None and [r.seed for r in records] == [700, 701, 702] == trial.user_attrs["seeds"]
        assert {r.engine for r in records} == {"population(K=3, fp32)"}  # the trial's seeds, fused
        assert {r.config["optim"]["lr"] for r in records} == {trial.params["optim.lr"]}
        best = [r.best["val_acc"] for r in records]
        assert len(set(best)) > 1  # different seeds: else the mean below checks nothing
        assert trial.value == pytest.approx(sum(best) / 3, abs=1e-12)
        # pruning's signal: every epoch, the mean over the seeds of the best validation accuracy so far
        for step, reported in trial.intermediate_values.items():
            so_far = [max(row["val_acc"] for row in r.curves[:step + 1]) for r in records]
            assert reported == pytest.approx(sum(so_far) / 3, abs=1e-12)
        assert trial.intermediate_values[1] == pytest.approx(trial.value, abs=1e-12)
        for record in records:  # every seed run keeps its own run.json
            folder = Path(tmp_path / "results" / "studies" / "robust" / f"trial_{trial.number:05d}"
                          / f"seed_{record.seed}")
            assert json.loads((folder / "run.json").read_text())["seed"] == record.seed
    runs = runs_table(study)
    assert sorted(Counter(runs["trial"]).values()) == [3, 3] and set(runs["seed"]) == {700, 701, 702}
    for _, rows in runs.groupby("trial"):  # one row per (trial, seed); the trial's value on each
        assert rows["value"].nunique() == 1 and rows["value"].iloc[0] == pytest.approx(rows["best_val_acc"].mean())
    curves = curves_table(study)
    assert len(curves) == 2 * 3 * 2 and set(curves.groupby(["trial", "seed"]).size()) == {2}
    # the tuning report: one row per trial, its value the mean over the seeds
    from dropout_lab.config.study_spec import load_spec
    from dropout_lab.reports.analyses import tuning
    from dropout_lab.reports.inputs import load_study_data

    report = tuning.analyze(load_study_data(load_spec(str(tmp_path / "robust.yaml")), study))
    table = {t.name: t.frame for t in report.tables}["trials"].set_index("trial")
    assert list(table["seeds"]) == [3, 3] and dict(table["value"]) == {t.number: t.value for t in study.trials}
    assert report.answer.startswith(f"Best best_val_acc {study.best_value:.4f} (the mean over 3 seeds) at optim.lr=")
    assert "Tuning used the mean of 3 seeds per trial" in report.conclusions[1]


def test_a_pruned_trial_stops_all_its_seeds_together(tmp_path: Path, data_root: Path) -> None:
    from dropout_lab.store.run_tables import runs_table
    from dropout_lab.store.trial_records import stored_records

    # Any mean below 0.99 after epoch 1 is pruned; epoch 2 is the last, where nothing is ever pruned.
    study = _robust_study(tmp_path, data_root, "pruned", {"_target_": "optuna.pruners.ThresholdPruner",
                                                          "lower": 0.99}, n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [0]
    records = stored_records(trial.user_attrs)
    assert records is not None and len(records) == 3
    assert all(r.status is Status.PRUNED and len(r.curves) == 1 for r in records)
    assert trial.user_attrs["status"] == "pruned"
    runs = runs_table(study)
    assert len(runs) == 3 and set(runs["status"]) == {"pruned"} and set(runs["epochs_run"]) == {1}


def test_a_failed_seed_fails_its_trial_never_a_mean_over_the_others() -> None:
    from dropout_lab.store.trial_records import outcome, trial_status

    def run(seed: int, status: Status, best: float | None = None, reason: str | None = None) -> RunRecord:
        return RunRecord(config={}, seed=seed, config_hash="", status=status, reason=reason,
                         best={} if best is None else {"val_acc": best}, final={"val_acc": 0.5})

    good = [run(700, Status.COMPLETED, 0.8), run(701, Status.COMPLETED, 0.9), run(702, Status.COMPLETED, 0.7)]
    assert outcome(good, "best_val_acc") == pytest.approx(0.8) and outcome(good, "val_acc") == pytest.approx(0.5)
    diverged = [good[0], run(701, Status.FAILED, reason="RunDivergedError: diverged: train_loss=nan at epoch 2"),
                good[2]]
    assert outcome(diverged, "best_val_acc") == TrialState.FAIL
    status, reason = trial_status(diverged)
    assert status is Status.FAILED and reason is not None
    assert reason.startswith("seed 701 failed: RunDivergedError: diverged") and "not a mean" in reason
    assert outcome([good[0], run(701, Status.PRUNED), good[2]], "best_val_acc") == TrialState.PRUNED


def test_a_larger_population_packs_whole_trials(tmp_path: Path, data_root: Path) -> None:
    """``population=7`` with 3 seeds: two trials (6 runs) per ask, trained as one population of 6."""
    from dropout_lab.store.trial_records import stored_records

    study = _robust_study(tmp_path, data_root, "packed", "none", n_trials=2, population=7)
    engines = {r.engine for t in study.trials for r in stored_records(t.user_attrs) or []}
    assert engines == {"population(K=6, fp32)"} and all(t.state == TrialState.COMPLETE for t in study.trials)
