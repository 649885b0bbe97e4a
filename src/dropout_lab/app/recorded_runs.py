"""A ``dropout-lab train`` run (single or in a plain ``--multirun``) stored as a trial of its study.

Each run is stored in study ``optuna.study`` (default: the run's ``name``) of ``optuna.storage``
(default: the embedded SQLite store under ``results_dir``), with its numeric overrides and seed as
params and its whole record as user attributes; a run whose config and seed are already complete
there is not rerun (``optuna.record=false`` turns both off).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from dropout_lab.config.schema import METRICS
from dropout_lab.store.backends import default_storage_url, open_storage
from dropout_lab.store.trial_records import add_run
from dropout_lab.training.run_record import RunRecord, config_hash

log = logging.getLogger(__name__)


def _param(value: Any) -> tuple[Any, BaseDistribution] | None:
    """Numbers become params with a point distribution (compatible across runs); others are skipped."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value, IntDistribution(value, value)
    if isinstance(value, float) and math.isfinite(value):
        return value, FloatDistribution(value, value)
    return None


def run_params(cfg: DictConfig, overrides: list[str]) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
    """Params of a plain run: its numeric overrides and its seed (all overrides are user attributes)."""
    params: dict[str, Any] = {}
    dists: dict[str, BaseDistribution] = {}
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        try:
            value = cfg
            for part in key.split("."):
                value = value[part]
        except Exception:  # group choices (model=scratch) are not config values
            continue
        param = _param(value)
        if param is not None:
            params[key], dists[key] = param
    params["seed"], dists["seed"] = cfg.seed, IntDistribution(cfg.seed, cfg.seed)
    return params, dists


def run_study(cfg: DictConfig) -> optuna.Study:
    """The study a plain run is stored in (created when missing)."""
    url = cfg.optuna.storage or default_storage_url(cfg.results_dir)
    return optuna.create_study(study_name=cfg.optuna.study or cfg.name, storage=open_storage(url, None),
                               direction=StudyDirection[METRICS.get(cfg.metric, "maximize").upper()],
                               load_if_exists=True)


def recorded_value(study: optuna.Study, cfg: DictConfig) -> float | None:
    """The metric of a complete trial with this run's config hash and seed (None if it has none yet)."""
    digest = config_hash(cfg)
    for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if done.user_attrs.get("config_hash") == digest and done.params.get("seed") == cfg.seed:
            log.info("already recorded as trial %d of study %s (%s=%.4f): not rerun",
                     done.number, study.study_name, cfg.metric, done.value)
            return done.value
    return None


def store_run(study: optuna.Study, cfg: DictConfig, record: RunRecord, output_dir: str, overrides: list[str]) -> None:
    """Add the run's record to ``study`` as a finished trial (complete, pruned or failed)."""
    params, dists = run_params(cfg, overrides)
    add_run(study, record, output_dir, params, dists, cfg.metric)
