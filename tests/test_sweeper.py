"""``hydra/sweeper=optuna``: current Optuna, pruning fed by a Lightning callback, resume toward n_trials."""

from pathlib import Path

import optuna
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)
LR = "optim.lr=tag(log, interval(1e-4, 0.5))"


def _study(tmp_path: Path, name: str = "smoke") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'results' / 'studies.db'}")


def _sweep(run_cli, *args: str):
    return run_cli("train", "--multirun", "hydra/sweeper=optuna", "experiment=smoke", *args)


def test_tuning_sweep_prunes_and_resumes_toward_total(run_cli, tmp_path: Path) -> None:
    common = ("trainer.max_epochs=3", "hydra.sweeper.sampler=random", "hydra.sweeper.pruner=median", LR)
    first = _sweep(run_cli, "hydra.sweeper.n_trials=6", *common)
    assert first.returncode == 0, first.stderr
    study = _study(tmp_path)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 6
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


def test_grid_sampler_covers_each_choice_once(run_cli, tmp_path: Path) -> None:
    out = _sweep(run_cli, "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner=none",
                 "model.dropout_1=choice(0.1,0.3,0.5)")
    assert out.returncode == 0, out.stderr
    values = sorted(t.params["model.dropout_1"] for t in _study(tmp_path).trials)
    assert values == [0.1, 0.3, 0.5]


def test_unknown_sampler_is_refused(run_cli) -> None:
    out = _sweep(run_cli, "hydra.sweeper.sampler=cmaes", LR)
    assert out.returncode != 0
    assert "hydra.sweeper.sampler='cmaes' is invalid: allowed one of tpe, random, grid" in out.stderr
