"""Create or load a study, and put a grid's cells in its queue exactly once."""

from __future__ import annotations

import hashlib
import time

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from dropout_lab.config.samplers import build_pruner, build_sampler
from dropout_lab.config.study_grid import cell_key, grid_cells
from dropout_lab.config.study_spec import StudySpec, load_study_ref
from dropout_lab.errors import StudySpecError

GRID_FINGERPRINT = "grid_fingerprint"
CELL_CHOICES = "cell_choices"
#: The user attribute of a queued trial that holds its grid cell (override values and seed).
CELL_ATTR = "cell"


def total_runs(spec: StudySpec) -> int:
    """How many runs the study holds when finished."""
    if spec.is_tuning:
        assert spec.n_trials is not None  # the spec check requires n_trials with a search_space
        return spec.n_trials
    return len(grid_cells(spec)) + len(spec.tuned_from) * len(spec.seed_list)


def current_total(spec: StudySpec, study: optuna.Study) -> int:
    """Runs the study holds so far: a sequential design's latest look (as enqueued), else :func:`total_runs`."""
    if spec.design is None:
        return total_runs(spec)
    return int(study.user_attrs.get("total_runs", total_runs(spec)))


def tuned_best(ref: str, storage: str | BaseStorage) -> tuple[StudySpec, FrozenTrial | None, int]:
    """A ``tuned_from`` reference's tuning study: its spec, its best trial (None while it holds no complete
    trial, or is not in ``storage``) and how many finished (complete or pruned) trials it holds."""
    tuning = load_study_ref(ref)
    try:
        study = optuna.load_study(study_name=tuning.name, storage=storage)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        return tuning, study.best_trial, len(finished)
    except (KeyError, ValueError):  # no such study, or no complete trial
        return tuning, None, 0


def tuned_cell(tuning: StudySpec, best: FrozenTrial) -> dict:
    """The cell a tuning study's best trial stands for: its fixed ``key=value`` overrides and best params."""
    fixed = dict(o.split("=", 1) for o in tuning.overrides if "=" in o and "${" not in o)
    return {**fixed, **{k: v for k, v in best.params.items() if k != "seed"}}


def tuned_cells(spec: StudySpec, storage: BaseStorage) -> list[dict]:
    """For ``tuned_from``: each tuning study's best parameters and fixed overrides, with every seed.

    Each entry is a study reference (``"ex7_tune technique=gamma"``); the tuning study must hold
    its ``n_trials`` finished trials.
    """
    cells = []
    for ref in spec.tuned_from:
        tuning, best, finished = tuned_best(ref, storage)
        if best is None or finished < (tuning.n_trials or 0):
            raise StudySpecError(f"{spec.name}: tuned_from study {tuning.name!r} is not finished "
                                 f"({finished}/{tuning.n_trials} trials); run it first")
        for seed in spec.seed_list:
            cells.append({**tuned_cell(tuning, best), "seed": seed})
    return cells


def study_cells(spec: StudySpec, storage: BaseStorage) -> list[dict]:
    """Every cell of a grid study: the grid's, then the tuned ones."""
    return grid_cells(spec) + (tuned_cells(spec, storage) if spec.tuned_from else [])


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded by its first seed (a grid sampler over the categorical dimensions)."""
    grid = {key: list(dim.choices or []) for key, dim in spec.search_space.items()}
    return build_sampler(spec.sampler, spec.seed_list[0], grid)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner, with the epoch budget as Hyperband's maximum resource."""
    return build_pruner(spec.pruner, spec.epochs)


def open_study(spec: StudySpec, storage: BaseStorage) -> optuna.Study:
    """Load an existing study with the spec's sampler and pruner (they are not stored)."""
    return optuna.load_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec),
                             pruner=make_pruner(spec))


def _fingerprint(cells: list[dict]) -> str:
    text = "\n".join(cell_key(c) for c in cells)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _enqueue_missing(study: optuna.Study, cells: list[dict]) -> int:
    present = {cell_key(t.user_attrs.get(CELL_ATTR, t.params)) for t in study.get_trials(deepcopy=False)}
    study.set_user_attr(CELL_CHOICES, _choices(cells))  # before the cells: a waiting worker may claim one at once
    added = 0
    for cell in cells:
        if cell_key(cell) not in present:
            study.enqueue_trial(cell, user_attrs={CELL_ATTR: cell}, skip_if_exists=False)
            added += 1
    study.set_user_attr("total_runs", len(cells))
    study.set_user_attr(GRID_FINGERPRINT, _fingerprint(cells))
    return added


def _choices(cells: list[dict]) -> dict[str, list]:
    """For text-valued keys, every value the cells take (Optuna's categorical choices)."""
    out: dict[str, set] = {}
    for cell in cells:
        for key, value in cell.items():
            if isinstance(value, str) or isinstance(value, bool) or value is None:
                out.setdefault(key, set()).add(value)
    return {key: sorted(values, key=str) for key, values in out.items()}


def prepare_study(spec: StudySpec, storage: BaseStorage, wait_s: float = 60.0) -> optuna.Study:
    """Create the study (or load it) and, for a grid, enqueue every cell not yet in the store.

    Exactly-once: only the process that creates the study enqueues the grid; others wait until
    its fingerprint is stored. A relaunch with a changed grid (new seeds, new values) enqueues the
    new cells only. Run at most one launcher when you change a grid.
    """
    cells = None if spec.is_tuning else study_cells(spec, storage)  # may refuse before anything is created
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.direction,
                                    sampler=make_sampler(spec), pruner=make_pruner(spec))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = open_study(spec, storage)
        created = False
    if created:
        for key, value in (("question", spec.question), ("metric", spec.objective), ("epochs", spec.epochs),
                           ("analysis", spec.analysis), ("total_runs", total_runs(spec))):
            study.set_user_attr(key, value)
    if spec.is_tuning:
        return study
    assert cells is not None  # built above for every grid study
    fingerprint = _fingerprint(cells)
    if not created:
        deadline = time.monotonic() + wait_s
        while GRID_FINGERPRINT not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.5)  # the creator is still enqueueing
        if study.user_attrs.get(GRID_FINGERPRINT) == fingerprint:
            return study
    _enqueue_missing(study, cells)
    return study
