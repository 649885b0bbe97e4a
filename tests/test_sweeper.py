"""``hydra/sweeper=optuna``: current Optuna, pruning fed by a Lightning callback, resume toward n_trials,
sampler/pruner configs, hparams_search files, and two sweeps sharing one study."""

import json
import os
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import CLI, heartbeat_age_s, study_if_ready, wait_for
from hydra_plugins.dropout_lab_optuna_sweeper.sweeper import OptunaSweeper

optuna.logging.set_verbosity(optuna.logging.WARNING)
LR = "optim.lr=tag(log, interval(1e-4, 0.5))"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _study(tmp_path: Path, name: str = "smoke") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'results' / 'studies.db'}")


def _sweep(run_cli, *args: str):
    return run_cli("train", "--multirun", "hydra/sweeper=optuna", "experiment=smoke", *args)


@pytest.mark.slow
def test_tuning_sweep_prunes_and_resumes_toward_total(run_cli, tmp_path: Path) -> None:
    common = ("trainer.max_epochs=3", "hydra.sweeper.sampler=random", "hydra.sweeper.pruner=median", LR)
    first = _sweep(run_cli, "hydra.sweeper.n_trials=6", *common)
    assert first.returncode == 0, first.stderr
    study = _study(tmp_path)
    assert len(study.get_trials(states=FINISHED)) == 6
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned and all(t.user_attrs["status"] == "pruned" for t in pruned)
    assert all(t.intermediate_values for t in study.trials)
    assert all(t.user_attrs["final"]["val_acc"] == t.value for t in study.get_trials(states=(TrialState.COMPLETE,)))

    resumed = _sweep(run_cli, "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib",
                     *common)
    assert resumed.returncode == 0, resumed.stderr
    study = _study(tmp_path)
    assert len(study.trials) == 8
    lrs = [t.params["optim.lr"] for t in study.trials]
    assert len(set(lrs)) == 8  # the resumed sampler did not replay earlier suggestions


@pytest.mark.slow
def test_grid_sampler_covers_each_choice_once(run_cli, tmp_path: Path) -> None:
    out = _sweep(run_cli, "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=5", "hydra.sweeper.pruner=none",
                 "model.dropout_1=choice(0.1,0.3,0.5)")
    assert out.returncode == 0, out.stderr
    values = sorted(t.params["model.dropout_1"] for t in _study(tmp_path).trials)
    assert values == [0.1, 0.3, 0.5]  # n_trials=5 is capped by the grid, which ends the sweep


def test_unknown_sampler_is_refused_with_the_valid_names(run_cli) -> None:
    out = _sweep(run_cli, "hydra.sweeper.sampler=bogus", LR)
    assert out.returncode != 0
    assert "hydra.sweeper.sampler='bogus' is invalid: allowed one of tpe, random, grid, cmaes, gp" in out.stderr
    assert "TPESampler" in out.stderr  # and the classes a _target_ config may name


def _sweeper(**fields) -> OptunaSweeper:
    args = dict(study_name=None, storage=None, sampler="tpe", pruner="median", direction="maximize",
                n_trials=2, n_jobs=1, seed=0, params={})
    return OptunaSweeper(**{**args, **fields})


@pytest.mark.parametrize(("fields", "message"), [
    ({"pruner": "bogus"}, "hydra.sweeper.pruner='bogus' is invalid: allowed one of median, hyperband, "
                          "successive_halving, none, or a config {_target_: optuna.pruners.CLASS"),
    ({"sampler": {"_target_": "os.system", "command": "true"}}, "hydra.sweeper.sampler._target_='os.system'"),
    ({"pruner": {"_target_": "optuna.pruners.PatientPruner", "patience": 1,
                 "wrapped_pruner": {"_target_": "subprocess.call"}}},
     "hydra.sweeper.pruner.wrapped_pruner._target_='subprocess.call' is invalid: allowed a class under optuna"),
    ({"sampler": {"_target_": "optuna.samplers.TPESampler", "n_startup": 5}}, "got an unexpected keyword"),
    ({"sampler": {"_target_": "optuna.pruners.MedianPruner"}}, "hydra.sweeper.sampler._target_='optuna.pruners"),
    ({"population": 0}, "hydra.sweeper.population=0 is invalid: allowed an integer >= 1"),
    ({"population_precision": "fp8"}, "hydra.sweeper.population_precision='fp8' is invalid: allowed one of fp32, bf16"),
])
def test_sweeper_refuses_unknown_pruners_and_targets_outside_optuna(fields: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        _sweeper(**fields)
    assert message in str(error.value)


def test_sweeper_accepts_target_configs_of_any_optuna_sampler_and_pruner() -> None:
    sweeper = _sweeper(sampler={"_target_": "optuna.samplers.TPESampler", "n_startup_trials": 5, "multivariate": True,
                                "seed": 3},
                       pruner={"_target_": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": 1})
    assert sweeper.sampler["n_startup_trials"] == 5 and sweeper.pruner["min_resource"] == 1
    for name in ("cmaes", "gp", "nsga2", "qmc", "random", "grid"):
        assert _sweeper(sampler=name).sampler["_target_"].startswith("optuna.samplers.")


@pytest.mark.slow
def test_hparams_search_file_in_the_templates_format_runs(run_cli, tmp_path: Path) -> None:
    """``conf/hparams_search/chapter_optuna.yaml`` is lightning-hydra-template's format: sampler ``_target_``,
    ``study_name``/``storage`` null, ``direction``, ``n_trials``, ``params``, ``optimized_metric``."""
    out = run_cli("train", "--multirun", "hparams_search=chapter_optuna", "experiment=smoke",
                  "hydra.sweeper.n_trials=2")
    assert out.returncode == 0, out.stderr
    study = _study(tmp_path)  # study_name null: the run's name
    trials = study.get_trials(states=FINISHED)
    assert len(trials) == 2 and study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert all(set(t.params) == {"model.dropout_1", "model.dropout_2", "optim.lr"} for t in trials)
    assert all(0.0 <= t.params["model.dropout_1"] <= 0.9 and 0.01 <= t.params["optim.lr"] <= 0.5 for t in trials)
    assert study.user_attrs["sampler"] == {"_target_": "optuna.samplers.TPESampler", "seed": 1234,
                                           "n_startup_trials": 10}
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    assert completed and all(t.value == t.user_attrs["final"]["val_acc"] for t in completed)  # optimized_metric


#: One Hyperband bracket (reduction factor 4 > max_resource 3): its first rung is epoch 1 of 3, where only the best
#: of the trials so far is promoted, so a trial worse than the one before it is pruned there.
HYPERBAND = "hydra.sweeper.pruner={_target_:optuna.pruners.HyperbandPruner,min_resource:1,reduction_factor:4}"


@pytest.mark.slow
def test_hyperband_pruner_of_the_sweep_prunes_in_its_jobs(run_cli, tmp_path: Path) -> None:
    """The median pruner (3 start-up trials) would not prune here: the jobs use the sweep's pruner, as
    recorded in the study."""
    common = ("trainer.max_epochs=3", "hydra.sweeper.sampler=random", HYPERBAND)
    good = _sweep(run_cli, *common, "hydra.sweeper.n_trials=1", "optim.lr=interval(0.29, 0.3)")
    assert good.returncode == 0, good.stderr
    bad = _sweep(run_cli, *common, "hydra.sweeper.n_trials=2", "optim.lr=interval(0.0001, 0.0002)")
    assert bad.returncode == 0, bad.stderr
    study = _study(tmp_path)
    assert study.user_attrs["pruner"] == {"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 1,
                                          "reduction_factor": 4, "max_resource": 3}  # Hyperband's budget: the epochs
    first, second = study.trials
    assert first.state == TrialState.COMPLETE and len(first.intermediate_values) == 3
    assert second.state == TrialState.PRUNED and second.user_attrs["status"] == "pruned"
    assert len(second.intermediate_values) < 3  # pruned before its last epoch
    assert second.intermediate_values[0] < first.intermediate_values[0]


@pytest.mark.slow
def test_population_sweep_trains_members_together_each_its_own_trial(run_cli, tmp_path: Path) -> None:
    """``hydra.sweeper.population=3``: 6 trials in 2 jobs of 3 fused members; each member is its own
    complete trial (record, curves, value), trained with its own params; with the same seed and
    params, a member's curves are those of the same run trained alone by ``train`` (noise off: a population
    draws its masks from counter-based streams, a single run from the global RNG)."""
    common = ("model=scratch", "trainer.max_epochs=2", "hydra.sweeper.sampler=random", "hydra.sweeper.pruner=none",
              "model.dropout_1=0", "model.dropout_2=0", "optim.momentum=interval(0.0, 0.9)",
              "optim.lr=interval(0.05, 0.3)")
    out = _sweep(run_cli, "hydra.sweeper.n_trials=6", "hydra.sweeper.population=3", *common)
    assert out.returncode == 0, out.stderr
    study = _study(tmp_path)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(study.trials) == 6 and len(trials) == 6
    for t in trials:
        attrs = t.user_attrs
        assert attrs["engine"] == "population(K=3, fp32)" and attrs["status"] == "completed"
        assert t.value == attrs["final"]["val_acc"] and len(attrs["curves"]) == 2
        assert attrs["config"]["optim"]["momentum"] == t.params["optim.momentum"]
        assert attrs["config"]["optim"]["lr"] == t.params["optim.lr"]
        assert f"optim.momentum={t.params['optim.momentum']}" in attrs["overrides"]
        assert (Path(attrs["output_dir"]) / "run.json").exists()
    assert len({round(t.params["optim.momentum"], 6) for t in trials}) == 6
    populations = sorted(p.name for p in Path(trials[0].user_attrs["output_dir"]).parent.glob("population_*"))
    assert populations == ["population_00000", "population_00003"]

    first = trials[0]
    alone = run_cli("train", "experiment=smoke", "model=scratch", "trainer.max_epochs=2", "optuna.record=false",
                    "model.dropout_1=0", "model.dropout_2=0", f"optim.momentum={first.params['optim.momentum']}",
                    f"optim.lr={first.params['optim.lr']}", f"hydra.run.dir={tmp_path / 'alone'}")
    assert alone.returncode == 0, alone.stderr
    single = json.loads((tmp_path / "alone" / "run.json").read_text())
    diff = max(abs(a[k] - b[k]) for a, b in zip(first.user_attrs["curves"], single["curves"], strict=True)
               for k in ("train_loss", "val_loss", "val_acc"))
    assert diff <= 1e-4


@pytest.mark.slow
def test_population_sweep_prunes_each_member_through_its_own_trial(run_cli, tmp_path: Path) -> None:
    """As the Hyperband test above, with the two bad trials trained as one population of 2."""
    common = ("trainer.max_epochs=3", "hydra.sweeper.sampler=random", HYPERBAND)
    good = _sweep(run_cli, *common, "hydra.sweeper.n_trials=1", "optim.lr=interval(0.29, 0.3)")
    assert good.returncode == 0, good.stderr
    bad = _sweep(run_cli, *common, "hydra.sweeper.n_trials=3", "hydra.sweeper.population=2",
                 "optim.lr=interval(0.0001, 0.0002)")
    assert bad.returncode == 0, bad.stderr
    first, *members = _study(tmp_path).trials
    assert first.state == TrialState.COMPLETE and first.user_attrs["engine"] == "per-run"
    for member in members:
        assert member.state == TrialState.PRUNED and member.user_attrs["status"] == "pruned"
        assert member.user_attrs["engine"] == "population(K=2, fp32)" and len(member.user_attrs["curves"]) < 3
        assert member.intermediate_values[0] < first.intermediate_values[0]


@pytest.mark.slow
def test_population_sweep_falls_back_to_one_run_per_job_for_instruments(run_cli, tmp_path: Path) -> None:
    out = _sweep(run_cli, "hydra.sweeper.n_trials=2", "hydra.sweeper.population=2", "hydra.sweeper.pruner=none",
                 "trainer.max_epochs=1", "monitor.enabled=true", "model.dropout_1=interval(0.1, 0.8)")
    assert out.returncode == 0, out.stderr
    warning = "hydra.sweeper.population=2 ignored: these runs train per-run: monitor.enabled=true"
    assert warning in out.stderr + out.stdout
    trials = _study(tmp_path).get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2 and all(t.user_attrs["engine"] == "per-run" for t in trials)


def _start_sweep(tmp_path: Path, data_root: Path, tag: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(tmp_path / "results")}
    log = open(tmp_path / f"sweep_{tag}.log", "w")  # closed with the process, below
    return subprocess.Popen([*CLI, "train", "--multirun", "hydra/sweeper=optuna", "experiment=smoke", *args,
                             f"hydra.sweep.dir={tmp_path / 'multirun' / tag}"],
                            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_two_sweeps_on_one_study_share_its_budget_and_never_fail_each_others_trials(
        data_root: Path, tmp_path: Path) -> None:
    db = tmp_path / "results" / "studies.db"
    common = ("hydra.sweeper.n_trials=6", "hydra.sweeper.sampler=random", "hydra.sweeper.pruner=none",
              "hydra.sweeper.study_name=shared", "model.dropout_1=interval(0.0, 0.9)", LR)
    first = _start_sweep(tmp_path, data_root, "a", *common, "trainer.max_epochs=3")  # longer trials: it outlasts
    # the second sweep's start-up
    try:
        # The second sweep starts while a trial of the first is running and beating.
        wait_for(lambda: (s := study_if_ready(db, "shared")) and any(
            heartbeat_age_s(db, "shared", t.number) is not None for t in s.get_trials(states=(TrialState.RUNNING,))),
            "a running trial of the first sweep with a heartbeat")
        second = _start_sweep(tmp_path, data_root, "b", *common)
        try:
            assert second.wait(timeout=600) == 0, (tmp_path / "sweep_b.log").read_text()[-3000:]
        finally:
            second.kill()
        assert first.wait(timeout=600) == 0, (tmp_path / "sweep_a.log").read_text()[-3000:]
    finally:
        first.kill()
    study = _study(tmp_path, "shared")
    assert len(study.get_trials(states=FINISHED)) == 6  # exactly the budget, across both sweeps
    assert not study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING))
    sweeps = {Path(t.user_attrs["output_dir"]).parent.name for t in study.trials}
    assert sweeps == {"a", "b"}  # both sweeps ran trials of the one study
    params = [(t.params["model.dropout_1"], t.params["optim.lr"]) for t in study.trials]
    assert len(set(params)) == 6  # the two sweeps' samplers did not propose the same candidates
