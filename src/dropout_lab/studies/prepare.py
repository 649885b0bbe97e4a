"""Create or load a study, and put a grid's cells in its queue exactly once."""

from __future__ import annotations

import hashlib
import time

import optuna
from optuna.storages import BaseStorage

from dropout_lab.studies.grid import cell_key, grid_cells
from dropout_lab.studies.samplers import make_pruner, make_sampler
from dropout_lab.studies.spec import StudySpec

GRID_FINGERPRINT = "grid_fingerprint"


def total_runs(spec: StudySpec) -> int:
    """How many runs the study holds when finished."""
    return spec.n_trials if spec.is_tuning else len(grid_cells(spec))


def load_study(spec: StudySpec, storage: BaseStorage) -> optuna.Study:
    """Load an existing study with the spec's sampler and pruner (they are not stored)."""
    return optuna.load_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec),
                             pruner=make_pruner(spec))


def _fingerprint(spec: StudySpec) -> str:
    text = "\n".join(cell_key(c) for c in grid_cells(spec))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _enqueue_missing(study: optuna.Study, spec: StudySpec) -> int:
    present = {cell_key(t.system_attrs.get("fixed_params", t.params)) for t in study.get_trials(deepcopy=False)}
    added = 0
    for cell in grid_cells(spec):
        if cell_key(cell) not in present:
            study.enqueue_trial(cell, skip_if_exists=False)
            added += 1
    study.set_user_attr("total_runs", len(grid_cells(spec)))
    study.set_user_attr(GRID_FINGERPRINT, _fingerprint(spec))
    return added


def prepare_study(spec: StudySpec, storage: BaseStorage, wait_s: float = 60.0) -> optuna.Study:
    """Create the study (or load it) and, for a grid, enqueue every cell not yet in the store.

    Exactly-once: only the process that creates the study enqueues the grid; others wait until
    its fingerprint is stored. A relaunch with a changed grid (new seeds, new values) enqueues the
    new cells only. Run at most one launcher when you change a grid.
    """
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.direction,
                                    sampler=make_sampler(spec), pruner=make_pruner(spec))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = load_study(spec, storage)
        created = False
    if created:
        for key, value in (("question", spec.question), ("metric", spec.metric), ("epochs", spec.epochs),
                           ("analysis", spec.analysis), ("total_runs", total_runs(spec))):
            study.set_user_attr(key, value)
    if spec.is_tuning:
        return study
    fingerprint = _fingerprint(spec)
    if not created:
        deadline = time.monotonic() + wait_s
        while GRID_FINGERPRINT not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.5)  # the creator is still enqueueing
        if study.user_attrs.get(GRID_FINGERPRINT) == fingerprint:
            return study
    _enqueue_missing(study, spec)
    return study
