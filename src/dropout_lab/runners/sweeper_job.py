"""A job of ``hydra/sweeper=optuna``: train the trial (or, with the sweeper's ``population``, the trials) it was
launched for, beating for each, pruning each with the pruner the sweeper recorded, and storing each record.

The sweeper asked the trials and tells them from the records stored here (``Tuner.run``). A
population job's member configs are the job's config with each trial's params (seed, rates, learning
rate, momentum, weight decay: the keys members may differ in); each member's ``run.json`` goes to
``SWEEP_DIR/trial_NNNNN/``. A single-trial job's run folder is the job's own output folder.
"""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf

from dropout_lab.config.engine import is_member_key
from dropout_lab.config.samplers import build_pruner
from dropout_lab.runners.session import TrialSession
from dropout_lab.runners.trial_runs import TrialRun, train_trials
from dropout_lab.runners.tuner import PRUNER_ATTR
from dropout_lab.store.backends import open_storage
from dropout_lab.training.run_record import RunRecord


def _sweep_study(cfg: DictConfig) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    """The sweeper's study (with the pruner it recorded: the job decides on pruning) and its storage."""
    storage = open_storage(cfg.optuna.storage, heartbeat_interval=None)
    study_id = storage.get_study_id_from_name(cfg.optuna.study)
    pruner = build_pruner(storage.get_study_user_attrs(study_id).get(PRUNER_ATTR, "median"), cfg.trainer.max_epochs)
    return optuna.load_study(study_name=cfg.optuna.study, storage=storage, pruner=pruner), storage


def _member_cfg(cfg: DictConfig, params: dict) -> DictConfig:
    member = copy.deepcopy(cfg)
    member.optuna.population_trials = None
    for key, value in params.items():
        if is_member_key(key):  # the other params are equal for all members and in the job's overrides
            OmegaConf.update(member, key, value, merge=False)
    return member


def run_sweeper_job(cfg: DictConfig, output_dir: str, sweep_dir: str, overrides: list[str]) -> RunRecord | None:
    """Train the job's trial(s); the record of a single-trial job (None for a population job)."""
    study, storage = _sweep_study(cfg)
    population = cfg.optuna.population_trials
    numbers = list(population) if population else [cfg.optuna.trial]
    job_overrides = [o for o in overrides if not o.startswith(("optuna.population_trials=", "hydra."))]
    records: list[RunRecord] = []

    def finish(trial: optuna.Trial, ended: list[RunRecord] | None) -> None:  # stored in the trial; the sweeper tells it
        session.release(trial.number)
        records.extend(ended or [])

    with TrialSession(study, storage, cfg.metric, cfg.optuna.heartbeat) as session:
        runs = []
        for number in numbers:
            trial = session.hold(session.trial_id(number))
            if not population:
                runs.append(TrialRun(trial, {}, overrides, output_dir, cfg))
                continue
            params = dict(trial.params)
            runs.append(TrialRun(trial, params, job_overrides + [f"{k}={v}" for k, v in params.items()
                                                                 if is_member_key(k)],
                                 str(Path(sweep_dir) / f"trial_{number:05d}"), _member_cfg(cfg, params)))
        try:
            train_trials(runs, size=len(runs) if population else 1, precision=cfg.optuna.population_precision,
                         metric=cfg.metric, pruning=True, finish=finish)
        finally:
            for number in list(session.pending):
                session.release(number)  # the sweeper re-queues what is left
    return None if population or not records else records[0]
