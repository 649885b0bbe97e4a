"""The stored runs of one study, in the shapes the analyses need: the store's typed tables, nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna
import pandas as pd
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from dropout_lab.config.study_spec import StudySpec
from dropout_lab.store.run_tables import INSTRUMENTS, curves_table, instrument_table, runs_table
from dropout_lab.store.study_setup import tuned_best, tuned_cell


@dataclass
class StudyData:
    """Finished runs (``runs``), every recorded run (``all_runs``), per-epoch curves and instrument rows.

    ``runs``/``all_runs`` are :func:`runs_table` rows (grid keys, the flattened config, final metrics);
    ``instruments`` maps ``activations``/``test_time`` to :func:`instrument_table` rows (with ``trial``).
    ``study`` is kept for Optuna's own summaries of a tuning study (parameter importances).
    ``tuning`` (a study of tuned winners, ``tuned_from``): :func:`tuning_objectives` of its tuning studies.
    """

    spec: StudySpec
    runs: pd.DataFrame
    all_runs: pd.DataFrame
    curves: pd.DataFrame
    instruments: dict[str, pd.DataFrame] = field(default_factory=dict)
    study: optuna.Study | None = None
    tuning: pd.DataFrame | None = None

    @property
    def keys(self) -> list[str]:
        """The grid keys (what distinguishes configurations), in the spec's order."""
        keys = list(self.spec.grid) or (["noise"] if self.spec.tuned_from else [])
        return [k for k in keys if k in self.runs.columns]

    def label(self, frame: pd.DataFrame | None = None) -> pd.Series:
        """A readable configuration label per row, e.g. 'model.dropout_1=0.3, model.dropout_2=0.5'."""
        frame = self.runs if frame is None else frame
        return frame[self.keys].astype(str).apply(
            lambda row: ", ".join(f"{k}={v}" for k, v in row.items()), axis=1)

    def instrument(self, name: str) -> pd.DataFrame:
        """The rows of instrument ``name`` (empty when no run recorded it)."""
        return self.instruments.get(name, pd.DataFrame())


def tuning_objectives(spec: StudySpec, storage: str | BaseStorage) -> pd.DataFrame:
    """One row per ``tuned_from`` tuning study of ``spec``: ``ref``, ``tuning_study``, its ``objective`` (a column
    name), ``tuning_value`` (its best trial's value; None when the study is not in ``storage`` or has no complete
    trial), ``trials`` (finished), ``tuning_seeds`` and ``cell`` (the fixed overrides and best params it stands for)."""
    rows = []
    for ref in spec.tuned_from:
        tuning, best, finished = tuned_best(ref, storage)
        rows.append({"ref": ref, "tuning_study": tuning.name, "objective": tuning.objective,
                     "tuning_value": None if best is None else best.value, "trials": finished,
                     "tuning_seeds": len(tuning.seed_list), "cell": None if best is None else tuned_cell(tuning, best)})
    return pd.DataFrame(rows, columns=["ref", "tuning_study", "objective", "tuning_value", "trials", "tuning_seeds",
                                       "cell"])


def load_study_data(spec: StudySpec, study: optuna.Study, storage: str | BaseStorage | None = None) -> StudyData:
    """Read a study's trials into its typed tables; for ``tuned_from``, also its tuning studies' objectives from
    ``storage`` (the study's own store: Optuna has no public accessor for it, so the caller passes it)."""
    trials = study.get_trials(deepcopy=False)
    all_runs = runs_table(trials)
    runs = all_runs[all_runs["state"] == TrialState.COMPLETE.name]
    return StudyData(spec=spec, runs=runs.reset_index(drop=True), all_runs=all_runs, curves=curves_table(trials),
                     instruments={name: instrument_table(trials, name) for name in INSTRUMENTS},
                     study=study,
                     tuning=tuning_objectives(spec, storage) if spec.tuned_from and storage is not None else None)
