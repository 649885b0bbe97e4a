"""A study's typed tables, built from its Optuna trials alone (no ``run.json``, no config composition).

* :func:`runs_table`: one row per run (a trial of several seeds has one per seed, each with the trial's
  number, state and value: the mean over its seeds): trial, state, status, reason, seed, value, epochs run, wall
  time, config hash, host, engine (``per-run`` or ``population(K=8, fp32)``), attempts (1 + the earlier
  attempts lost to a dead worker and re-queued), the trial's params, the
  resolved config flattened to dotted columns (``model.dropout_1``, ``model.noise``,
  ``optim.weight_decay``, ``name``, ``trainer.max_epochs``),
  the final metrics (last epoch: ``test_acc``...), the best-validation epoch's (``best_epoch``,
  ``best_test_acc``...) and the library versions (``versions.torch``).
* :func:`curves_table`: one row per (run, epoch).
* :func:`instrument_table`: the instruments' tidy rows (``activations``, ``test_time``) per run.

Only optuna, pandas and numpy are imported here, so commands that do not train stay light. The keys
read are the fields of ``dropout_lab.training.run_record.RunRecord`` (``RunRecord.trial_attrs``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from dropout_lab.config.engine import PER_RUN
from dropout_lab.store.trial_records import final_trials, retry_history, seed_runs

#: Columns every run table starts with, in this order.
RUN_COLUMNS = ("trial", "state", "status", "reason", "seed", "value", "last_reported_value", "epochs_run",
               "wall_time_s", "config_hash", "host", "engine", "attempts", "overrides", "output_dir")
#: Columns every curve table has (the trial's params follow ``seed``; metrics follow ``epoch``).
CURVE_COLUMNS = ("trial", "seed", "epoch", "train_loss", "val_loss", "val_acc", "seconds")
INSTRUMENTS = ("activations", "test_time")

Trials = optuna.Study | Sequence[FrozenTrial]


def _trials(source: Trials) -> list[FrozenTrial]:
    return source.get_trials(deepcopy=False) if isinstance(source, optuna.Study) else list(source)


def _final(source: Trials) -> list[FrozenTrial]:
    return final_trials(_trials(source))


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``{"model": {"dropout_1": 0.5}}`` -> ``{"model.dropout_1": 0.5}``).

    Lists become JSON text, so that every column holds one value per run.
    """
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def epochs_run(trial: FrozenTrial, attrs: Mapping[str, Any] | None = None) -> int:
    """Epochs a run of ``trial`` (its record's attributes ``attrs``; the trial's own by default) trained: its
    curve rows, or the trial's reported epochs if more.

    A pruned run's last epoch reports its validation metric (step = 0-based epoch) and is stopped
    before the epoch's curve row is written, so its curves are one row short of what it trained.
    """
    attrs = trial.user_attrs if attrs is None else attrs
    reported = max(trial.intermediate_values) + 1 if trial.intermediate_values else 0
    return max(len(attrs.get("curves") or []), reported)


def _seed(trial: FrozenTrial, attrs: Mapping[str, Any]) -> Any:
    return attrs.get("seed", trial.params.get("seed"))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric and boolean columns get their dtypes; text gets pandas' string dtype (``str``), both a column of
    strings (by inference) and a column mixing kinds of values (their text; missing values stay missing), so that
    no later step treats an object column as strings (pandas 3 deprecates that: ``Pandas4Warning``)."""
    frame = frame.infer_objects()
    # Object columns only: str columns hold one kind already (naming "str" keeps pandas from including them).
    for column in frame.select_dtypes(include="object", exclude="str").columns:
        if frame[column].dropna().map(type).nunique() > 1:
            frame[column] = frame[column].astype("str")
    return frame


def _run_row(trial: FrozenTrial, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The row of the run of ``trial`` whose record's attributes are ``attrs``."""
    reported = list(trial.intermediate_values.values())
    config = flatten(attrs.get("config") or {})
    params = {k: v for k, v in trial.params.items() if k not in config and k != "seed"}
    row = {"trial": trial.number, "state": trial.state.name, "status": attrs.get("status"),
           "reason": attrs.get("reason"), "seed": _seed(trial, attrs), "value": trial.value,
           "last_reported_value": trial.value if trial.value is not None else (reported[-1] if reported else None),
           "epochs_run": epochs_run(trial, attrs), "wall_time_s": attrs.get("wall_time_s"),
           "config_hash": attrs.get("config_hash"), "host": attrs.get("host"),
           "engine": attrs.get("engine") or (PER_RUN if attrs.get("config") else None),  # older records: per-run
           "attempts": 1 + len(retry_history(trial)),
           "overrides": " ".join(attrs["overrides"]) if attrs.get("overrides") is not None else None,
           "output_dir": attrs.get("output_dir")}
    config.pop("seed", None)
    return {**row, **params, **config, **(attrs.get("final") or {}), **flatten(attrs.get("best") or {}, "best_"),
            **flatten(attrs.get("versions") or {}, "versions.")}


def runs_table(study: Trials) -> pd.DataFrame:
    """One row per finished run (re-queued failures left out: their retry is the run); see the module doc."""
    rows = [_run_row(t, attrs) for t in _final(study) for attrs in seed_runs(t.user_attrs)]
    if not rows:
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    frame = pd.DataFrame(rows)
    frame["epochs_run"] = frame["epochs_run"].astype(int)
    frame["value"] = frame["value"].astype(float)
    frame["last_reported_value"] = frame["last_reported_value"].astype(float)
    frame["wall_time_s"] = frame["wall_time_s"].astype(float)
    return _typed(frame)


def _rows_of(trial: FrozenTrial, attrs: Mapping[str, Any], key: str, with_params: bool) -> pd.DataFrame:
    """A run's list ``attrs[key]`` as a frame, led by trial and seed (and the trial's params)."""
    keys = {"trial": trial.number, "seed": _seed(trial, attrs)}
    if with_params:
        keys.update({k: v for k, v in trial.params.items() if k != "seed"})
    rows = pd.DataFrame(attrs[key])
    return pd.concat([pd.DataFrame([keys] * len(rows)), rows.drop(columns=list(keys), errors="ignore")], axis=1)


def _parts(study: Trials, key: str, with_params: bool) -> list[pd.DataFrame]:
    """Every finished run's ``key`` rows (a trial of several seeds: each seed run's)."""
    return [_rows_of(t, attrs, key, with_params) for t in _final(study) for attrs in seed_runs(t.user_attrs)
            if attrs.get(key)]


def curves_table(study: Trials) -> pd.DataFrame:
    """One row per (finished run, epoch): trial, seed, the trial's params, epoch, train/val metrics, seconds."""
    parts = _parts(study, "curves", with_params=True)
    if not parts:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    return _typed(pd.concat(parts, ignore_index=True))


def instrument_table(study: Trials, name: str) -> pd.DataFrame:
    """The tidy rows of instrument ``name`` (``activations`` or ``test_time``) of every finished run,
    with trial and seed.
    """
    if name not in INSTRUMENTS:
        raise ValueError(f"instrument {name!r} is unknown: allowed one of {', '.join(INSTRUMENTS)}")
    parts = _parts(study, name, with_params=False)
    if not parts:
        return pd.DataFrame(columns=["trial", "seed"])
    return _typed(pd.concat(parts, ignore_index=True))


def export_tables(study: Trials, folder: str | Path) -> list[str]:
    """Write the run and curve tables (and each instrument table that has rows) as CSV and Parquet.

    Returns the names written, e.g. ``["runs", "curves", "activations"]``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trials = _trials(study)  # read the store once
    tables = {"runs": runs_table(trials), "curves": curves_table(trials),
              **{name: instrument_table(trials, name) for name in INSTRUMENTS}}
    written = [name for name, frame in tables.items() if name in ("runs", "curves") or not frame.empty]
    for name in written:
        tables[name].to_csv(folder / f"{name}.csv", index=False)
        tables[name].to_parquet(folder / f"{name}.parquet", index=False)
    return written
