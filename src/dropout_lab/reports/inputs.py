"""The stored runs of one study, in the shapes the analyses need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from dropout_lab.studies.spec import StudySpec
from dropout_lab.studies.trial_records import curves_frame, runs_frame


@dataclass
class StudyData:
    """Finished runs (``runs``), every recorded run (``all_runs``), per-epoch curves and raw user attributes."""

    spec: StudySpec
    runs: pd.DataFrame
    all_runs: pd.DataFrame
    curves: pd.DataFrame
    attrs: dict[int, dict[str, Any]]
    study: optuna.Study | None = None

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


def load_study_data(spec: StudySpec, study: optuna.Study) -> StudyData:
    """Read a study's trials into tables."""
    all_runs = runs_frame(study)
    runs = all_runs[all_runs["state"] == TrialState.COMPLETE.name] if not all_runs.empty else all_runs
    attrs = {t.number: dict(t.user_attrs) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    return StudyData(spec=spec, runs=runs.reset_index(drop=True), all_runs=all_runs,
                     curves=curves_frame(study), attrs=attrs, study=study)
