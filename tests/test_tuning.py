"""The ask/tell core (``runners/tuner.py``) and sampler/pruner configs of study files."""

from __future__ import annotations

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
    other.tell(fresh, ended(0.5))
    # Nothing is free until the dead worker's trial goes stale (grace: 4 beats); then it comes back.
    (retried,) = wait_for(lambda: other.ask(), "the stale trial re-queued", timeout=60)
    assert retried.params == lost.params and retried.number != lost.number
    states = {t.number: t.state for t in optuna.load_study(study_name="t", storage=f"sqlite:///{db}").trials}
    assert states[lost.number] == TrialState.FAIL
    assert states[beating.number] == TrialState.RUNNING  # it beat through the same grace period
    live.tell(beating, ended(status=Status.PRUNED))
    other.tell(retried, ended(float("nan")))  # a NaN metric fails the trial
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
                    tuner.tell(trial, ended(trial.params["x"]))
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
                tuner.tell(trial, ended(float(trial.params["c"])))

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
