"""Store a ``dropout-lab train`` run as an Optuna trial: a single run, a multirun job, or a sweeper trial."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from dropout_lab.config.engine import is_member_key
from dropout_lab.config.samplers import build_pruner
from dropout_lab.config.study_spec import METRICS
from dropout_lab.runners.pruning import EpochPruning
from dropout_lab.runners.trial_runs import MemberTrial, train_group
from dropout_lab.runners.tuner import PRUNER_ATTR
from dropout_lab.store.backends import Heartbeat, default_storage_url, open_storage
from dropout_lab.store.claims import mark_worker
from dropout_lab.store.trial_records import save_failure, save_record
from dropout_lab.training.run_record import RunRecord, config_hash

log = logging.getLogger(__name__)


@dataclass
class TrialLink:
    """What the run needs from its trial: callbacks, and the stored value if it is already done."""

    callbacks: list[L.Callback] = field(default_factory=list)
    done_value: float | None = None


def _param(value: Any) -> tuple[Any, Any] | None:
    """Numbers become params with a point distribution (compatible across runs); others are skipped."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value, IntDistribution(value, value)
    if isinstance(value, float) and math.isfinite(value):
        return value, FloatDistribution(value, value)
    return None


def run_params(cfg: DictConfig, overrides: list[str]) -> tuple[dict, dict]:
    """Params of a plain run: its numeric overrides and its seed (all overrides are user attributes)."""
    params, dists = {}, {}
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


def _sweep_study(cfg: DictConfig) -> tuple[optuna.Study, Any, int]:
    """The sweeper's study (with the pruner it recorded: the job decides on pruning), its storage and id."""
    storage = open_storage(cfg.optuna.storage, heartbeat_interval=None)
    study_id = storage.get_study_id_from_name(cfg.optuna.study)
    pruner = build_pruner(storage.get_study_user_attrs(study_id).get(PRUNER_ATTR, "median"), cfg.trainer.max_epochs)
    return optuna.load_study(study_name=cfg.optuna.study, storage=storage, pruner=pruner), storage, study_id


def _sweeper_trial(cfg: DictConfig, output_dir: str) -> Iterator[TrialLink]:
    """A job of ``hydra/sweeper=optuna``: beat for its trial while it trains, prune with the sweep's pruner."""
    study, storage, study_id = _sweep_study(cfg)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, cfg.optuna.trial)
    trial = optuna.Trial(study, trial_id)
    with Heartbeat(storage, cfg.optuna.heartbeat) as heartbeat:
        heartbeat.add(trial_id)
        try:
            yield TrialLink(callbacks=[EpochPruning(trial, monitor=cfg.metric)])
        finally:
            try:
                save_record(trial, RunRecord.read(output_dir), output_dir)
            except FileNotFoundError:
                save_failure(trial, "the run stopped before writing its record")


def _recorded_run(cfg: DictConfig, output_dir: str, overrides: list[str]) -> Iterator[TrialLink]:
    url = cfg.optuna.storage or default_storage_url(cfg.results_dir)
    study = optuna.create_study(study_name=cfg.optuna.study or cfg.name, storage=open_storage(url, None),
                                direction=StudyDirection[METRICS.get(cfg.metric, "maximize").upper()],
                                load_if_exists=True)
    digest = config_hash(cfg)
    for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if done.user_attrs.get("config_hash") == digest and done.params.get("seed") == cfg.seed:
            log.info("already recorded as trial %d of study %s (%s=%.4f): not rerun",
                     done.number, study.study_name, cfg.metric, done.value)
            yield TrialLink(done_value=done.value)
            return
    try:
        yield TrialLink()
    finally:
        record: RunRecord | None = None
        with contextlib.suppress(FileNotFoundError):
            record = RunRecord.read(output_dir)
        if record is not None:
            params, dists = run_params(cfg, overrides)
            completed = record.status == "completed"
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.COMPLETE if completed else TrialState.FAIL,
                value=record.final[cfg.metric] if completed else None,
                params=params, distributions=dists, user_attrs=record.trial_attrs(output_dir)))


@contextmanager
def linked_trial(cfg: DictConfig, output_dir: str, overrides: list[str]) -> Iterator[TrialLink]:
    """Connect a run to its trial; on exit its record (failed or pruned too) is in the store."""
    if cfg.optuna.trial is not None:
        yield from _sweeper_trial(cfg, output_dir)
    elif cfg.optuna.record:
        yield from _recorded_run(cfg, output_dir, overrides)
    else:
        yield TrialLink()


def train_sweep_population(cfg: DictConfig, sweep_dir: str | Path, overrides: list[str]) -> None:
    """A population job of ``hydra/sweeper=optuna``: train trials ``cfg.optuna.members`` together.

    Each member's config is the job's ``cfg`` with its trial's params (seed, rates, learning rate,
    momentum, weight decay: the keys members may differ in) set; the job beats for every member
    until it ends, prunes each through its own trial, and stores each member's complete record in
    its trial and in ``sweep_dir/trial_NNNNN/run.json``. The sweeper tells the trials.
    """
    study, storage, study_id = _sweep_study(cfg)
    job_overrides = [o for o in overrides if not o.startswith(("optuna.members=", "hydra."))]
    with Heartbeat(storage, cfg.optuna.heartbeat) as heartbeat:
        members = []
        for number in cfg.optuna.members:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
            heartbeat.add(trial_id)
            trial = optuna.Trial(study, trial_id)
            mark_worker(trial)
            params = storage.get_trial(trial_id).params
            member_cfg = copy.deepcopy(cfg)
            member_cfg.optuna.members = None
            for key, value in params.items():
                if is_member_key(key):  # the other params are equal for all members and in the job's overrides
                    OmegaConf.update(member_cfg, key, value, merge=False)
            member_overrides = job_overrides + [f"{k}={v}" for k, v in params.items() if is_member_key(k)]
            members.append(MemberTrial(trial, dict(params), member_overrides,
                                       str(Path(sweep_dir) / f"trial_{number:05d}"), member_cfg))
        train_group(members, cfg.metric, cfg.optuna.population_precision, tell=lambda trial, outcome: None,
                    pruning=True)
