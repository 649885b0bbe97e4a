"""The store is the run contract: a trial holds the whole run record, and typed tables are built from trials alone."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from pandas.errors import Pandas4Warning

from dropout_lab.store.run_tables import (
    CURVE_COLUMNS,
    RUN_COLUMNS,
    curves_table,
    epochs_run,
    export_tables,
    flatten,
    instrument_table,
    runs_table,
)
from dropout_lab.store.trial_records import save_record
from dropout_lab.training.run_record import OUTPUT_DIR_ATTR, TRIAL_ATTR_KEYS, RunRecord

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _record(p: float, seed: int, epochs: int, status: str = "completed") -> RunRecord:
    config = {"seed": seed, "name": "chapter", "threads": None,
              "model": {"_target_": "dropout_lab.models.DropoutMLP", "dropout_1": p, "dropout_2": p},
              "optim": {"lr": 0.1, "weight_decay": 0.0}, "trainer": {"max_epochs": 3, "devices": 1},
              "test_time": {"T": [1, 10]}}
    curves = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "val_acc": 0.5 + 0.1 * e, "seconds": 0.5}
              for e in range(1, epochs + 1)]
    final = {"val_loss": 0.4, "val_acc": 0.8, "test_loss": 0.45, "test_acc": 0.79} if status == "completed" else {}
    best = {"epoch": 2, "val_loss": 0.55, "val_acc": 0.7, "test_loss": 0.5, "test_acc": 0.69} if final else {}
    return RunRecord(config=config, seed=seed, config_hash=f"hash{p}", status=status, curves=curves, final=final,
                     best=best,
                     wall_time_s=1.23456, overrides=[f"model.dropout_1={p}", f"seed={seed}"],
                     activations=[{"source": "train", "epoch": 1, "step": 0, "layer": 1, "stage": "before",
                                   "mean": 0.1, "var": 0.2, "zero_frac": 0.5}])


def _study() -> optuna.Study:
    """Two complete runs, one pruned at epoch 2 of 3 (one curve row), and a failure that was re-queued."""
    study = optuna.create_study(direction="maximize")

    def add(record: RunRecord, state: TrialState, value: float | None = None, reported: int = 0,
            system_attrs: dict | None = None) -> None:
        p = record.config["model"]["dropout_1"]
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value, params={"model.dropout_1": p, "seed": record.seed, "model": "concise"},
            distributions={"model.dropout_1": FloatDistribution(p, p),
                           "seed": IntDistribution(record.seed, record.seed),
                           "model": CategoricalDistribution(["scratch", "concise"])},
            user_attrs=record.trial_attrs(f"out/{len(study.trials)}"), system_attrs=system_attrs,
            intermediate_values={step: 0.6 + 0.1 * step for step in range(reported)}))

    add(_record(0.5, 0, 3), TrialState.COMPLETE, 0.8, reported=3)
    add(_record(0.0, 0, 3), TrialState.COMPLETE, 0.8, reported=3)
    add(_record(0.2, 1, 1, status="pruned"), TrialState.PRUNED, reported=2)
    add(_record(0.2, 2, 0, status="failed"), TrialState.FAIL)
    add(_record(0.2, 2, 3), TrialState.COMPLETE, 0.8, system_attrs={"retry_history": [3]})
    return study


def test_a_trial_holds_the_whole_run_record() -> None:
    record = _record(0.5, 4, 2)
    study = optuna.create_study()
    trial = study.ask()
    save_record(trial, record, "results/studies/x/trial_00000")
    attrs = study.trials[0].user_attrs
    assert set(attrs) == {*TRIAL_ATTR_KEYS, OUTPUT_DIR_ATTR}
    assert {"config", "overrides", "seed", "config_hash", "curves", "final", "best", "activations", "test_time",
            "versions", "host", "wall_time_s", "status", "reason"} <= set(TRIAL_ATTR_KEYS)
    again = RunRecord.from_trial_attrs(attrs)
    assert again == RunRecord(**{**record.__dict__, "wall_time_s": 1.235})
    assert again.versions["optuna"] == optuna.__version__


def test_runs_table_is_typed_and_built_from_the_trials_alone() -> None:
    runs = runs_table(_study())
    assert list(runs.columns[:len(RUN_COLUMNS)]) == list(RUN_COLUMNS)
    assert runs["trial"].tolist() == [0, 1, 2, 4]  # the re-queued failure (3) is replaced by its retry (4)
    assert runs["state"].tolist() == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert runs["epochs_run"].tolist() == [3, 3, 2, 3]  # the pruned run trained 2 epochs (1 curve row + 1 report)
    assert runs["attempts"].tolist() == [1, 1, 1, 2]  # the retry counts the attempt its dead worker lost
    assert runs["model.dropout_1"].tolist() == [0.5, 0.0, 0.2, 0.2]
    assert runs["model"].tolist() == ["concise"] * 4  # a group choice: a param, not a config value
    assert runs.loc[0, "name"] == "chapter" and runs.loc[0, "test_time.T"] == "[1, 10]"
    assert runs.loc[0, "overrides"] == "model.dropout_1=0.5 seed=0" and runs.loc[0, "wall_time_s"] == 1.235
    assert runs.loc[0, "versions.optuna"] == optuna.__version__ and runs.loc[0, "host"]
    assert runs.loc[2, "last_reported_value"] == pytest.approx(0.7) and pd.isna(runs.loc[2, "value"])
    dtypes = runs.dtypes
    for column in ("trial", "seed", "epochs_run", "trainer.max_epochs", "trainer.devices"):
        assert pd.api.types.is_integer_dtype(dtypes[column]), column
    for column in ("value", "wall_time_s", "model.dropout_1", "optim.weight_decay", "test_acc"):
        assert pd.api.types.is_float_dtype(dtypes[column]), column
    assert runs["seed"].tolist() == [0, 0, 1, 2] and "seed" not in runs.columns[len(RUN_COLUMNS):]
    assert runs.loc[0, "best_epoch"] == 2 and runs.loc[0, "best_test_acc"] == 0.69 and runs.loc[0, "test_acc"] == 0.79
    assert pd.isna(runs.loc[2, "best_test_acc"])  # the pruned run has no selection


def test_curves_and_instrument_tables() -> None:
    study = _study()
    curves = curves_table(study)
    assert set(CURVE_COLUMNS) <= set(curves.columns) and list(curves.columns[:2]) == ["trial", "seed"]
    assert curves.groupby("trial").size().to_dict() == {0: 3, 1: 3, 2: 1, 4: 3}
    assert (curves.loc[curves["trial"] == 0, "model.dropout_1"] == 0.5).all()
    activations = instrument_table(study, "activations")
    assert activations["trial"].tolist() == [0, 1, 2, 4] and {"layer", "stage", "var", "seed"} <= set(activations)
    assert instrument_table(study, "test_time").empty
    with pytest.raises(ValueError, match="activations, test_time"):
        instrument_table(study, "weights")
    empty = optuna.create_study()
    assert runs_table(empty).empty and list(runs_table(empty).columns) == list(RUN_COLUMNS)
    assert curves_table(empty).empty


def test_run_tables_give_text_pandas_string_dtype_and_raise_no_pandas4warning() -> None:
    """A config value stored as a number in one run and as text in another is one text column, of pandas' string
    dtype like every other text column; building the tables raises no pandas deprecation (Pandas4Warning)."""
    study = _study()
    mixed = [_record(0.5, 7, 3), _record(0.5, 8, 3)]
    mixed[0].config["tag"], mixed[1].config["tag"] = 3, "three"
    for record in mixed:
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=0.8, params={"seed": record.seed},
            distributions={"seed": IntDistribution(record.seed, record.seed)},
            user_attrs=record.trial_attrs(f"out/{len(study.trials)}")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Pandas4Warning)
        runs, curves = runs_table(study), curves_table(study)
        activations = instrument_table(study, "activations")
    assert runs["tag"].tolist()[-2:] == ["3", "three"] and runs["tag"].isna().sum() == 4  # missing stays missing
    for column in ("tag", "state", "name", "model", "overrides", "test_time.T"):
        assert pd.api.types.is_string_dtype(runs[column]) and runs[column].dtype != object, column
    assert all(runs[c].isna().all() for c in runs if runs[c].dtype == object)  # object: only columns of no value
    assert activations["stage"].dtype == "str" and curves["model"].dtype == "str"


def test_epochs_run_counts_curve_rows_or_reported_epochs() -> None:
    frozen = {t.number: t for t in _study().trials}
    assert epochs_run(frozen[2]) == 2 and len(frozen[2].user_attrs["curves"]) == 1
    assert epochs_run(frozen[0]) == 3
    assert epochs_run(optuna.trial.create_trial(state=TrialState.FAIL)) == 0


def test_flatten_nested_config() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2]}) == {"a.b": 1, "a.c.d": None, "e": "[1, 2]"}


def test_export_writes_csv_and_parquet_with_config_columns(tmp_path) -> None:
    assert export_tables(_study(), tmp_path) == ["runs", "curves", "activations"]
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert runs["model.dropout_1"].tolist() == [0.5, 0.0, 0.2, 0.2]
    assert pd.read_csv(tmp_path / "runs.csv")["trainer.max_epochs"].tolist() == [3] * 4
    assert len(pd.read_parquet(tmp_path / "curves.parquet")) == 10


def test_read_side_imports_neither_torch_nor_lightning() -> None:
    code = ("import sys, dropout_lab.store.run_tables, dropout_lab.reports.build, dropout_lab.cli.report, "
            "dropout_lab.cli.study; print(json.dumps(sorted(m for m in ('torch', 'lightning') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], check=False, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
