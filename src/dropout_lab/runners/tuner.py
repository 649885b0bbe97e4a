"""One ask/tell core for tuning: ``hydra/sweeper=optuna`` and ``study run`` workers both tune through it.

Policies every caller shares:

* **Budget.** A study is done when it holds ``n_trials`` finished (complete or pruned) trials, counted
  across relaunches and concurrent workers. A caller is given only the slots that no running trial
  fills, so concurrent callers together finish exactly ``n_trials`` (exact under the SQLite file lock;
  on PostgreSQL two askers at the same instant may overshoot by one each).
* **Seeds.** The sampler is seeded at every ask with ``base + trials stored + SEED_STRIDE * worker``
  (``base``: the sampler config's ``seed``, else the caller's), so a relaunch, a second worker or a
  second sweep never replays the same candidates, and a given history gives the same candidates.
  Grid and QMC samplers keep ``base``: their seed fixes one order of points that every worker
  follows, and they skip points already in the storage by themselves.
* **Stale trials.** Every asked trial beats (``Heartbeat``) until it is told. Before asking, trials
  whose beats stopped are failed and re-queued once by Optuna (``fail_stale_trials`` with the storage's
  ``RetryHeartbeatStaleTrialCallback``), and the next ask takes them first. A beating trial is never failed.

The population engine asks for K trials at once (``ask(k)``, ``run(evaluate, batch=K)``), trains them as one
fused population and tells each (a pruned or diverged member as soon as it leaves).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.storages import BaseStorage, fail_stale_trials
from optuna.trial import TrialState

from dropout_lab.config.samplers import (
    GRID_SAMPLER,
    build_pruner,
    build_sampler,
    grid_size,
    pruner_config,
    sampler_config,
)
from dropout_lab.config.study_spec import StudySpec
from dropout_lab.store.backends import Heartbeat, open_storage, queue_lock, quiet_experimental, retry_callback

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Seeds of different workers stay apart for this many stored trials.
SEED_STRIDE = 100_000
#: Samplers whose seed shuffles or scrambles one sequence of points that all workers must share.
SHARED_SEED_SAMPLERS = (GRID_SAMPLER, "optuna.samplers.QMCSampler")
#: Study user attributes holding the resolved sampler and pruner configs (sweeper jobs rebuild the pruner from them).
SAMPLER_ATTR, PRUNER_ATTR = "sampler", "pruner"
#: What a trial ended as: its metric (NaN or inf: failed), or ``TrialState.PRUNED`` / ``TrialState.FAIL``.
Outcome = float | TrialState | None


def outcome_of(result: Mapping[str, Any], metric: str) -> Outcome:
    """The outcome of a stored run (a run record's dict or trial attributes): its final ``metric``, PRUNED or FAIL."""
    if result["status"] == "completed":
        return float(result["final"][metric])
    return TrialState.PRUNED if result["status"] == "pruned" else TrialState.FAIL


def study_seed(spec: StudySpec) -> int:
    """A tuning study's base seed: its first run seed offset by its name, so that studies with the same
    run seed (the seven ``ex7_tune`` techniques) draw different candidates."""
    return spec.seeds[0] + zlib.crc32(spec.name.encode()) % 100_000


def sampler_seed(base: int, worker_index: int, stored: int) -> int:
    """The one seeding policy: ``base`` offset by the trials already stored and by the worker's index."""
    return (base + stored + SEED_STRIDE * worker_index) % 2**32


def grid_of(space: Mapping[str, BaseDistribution]) -> dict[str, list[Any]]:
    """The categorical dimensions of a search space: a grid sampler's default search space."""
    return {key: list(dist.choices) for key, dist in space.items() if isinstance(dist, CategoricalDistribution)}


class Tuner:
    """Ask trials of one study, tell their outcomes, until it holds ``n_trials`` finished trials.

    Open it with :meth:`open`; use it as a context manager, so that trials still asked but not told
    when it closes (Ctrl-C, a crashed launcher) are failed and re-queued for the next worker.
    """

    def __init__(self, study: optuna.Study, storage: BaseStorage, space: Mapping[str, BaseDistribution],
                 n_trials: int, sampler: Mapping[str, Any], pruner: optuna.pruners.BasePruner, *,
                 base_seed: int = 0, worker_index: int = 0,
                 lock: contextlib.AbstractContextManager | None = None, poll_s: float = 2.0) -> None:
        self.study, self.storage, self.space = study, storage, dict(space)
        self.sampler_config, self.pruner = dict(sampler), pruner
        self.base_seed = int(self.sampler_config.pop("seed", base_seed))
        self.worker_index, self.poll_s = worker_index, poll_s
        points = grid_size(self.sampler_config, grid_of(space))
        self.n_trials = n_trials if points is None else min(n_trials, points)
        self.lock = lock or contextlib.nullcontext()
        self.heartbeat = Heartbeat(storage)
        self._study_id = storage.get_study_id_from_name(study.study_name)
        self._pending: dict[int, int] = {}  # trial number -> trial id, asked and not yet told
        self._exhausted = False

    @classmethod
    def open(cls, storage_url: str, study_name: str, *, direction: str, space: Mapping[str, BaseDistribution],
             n_trials: int, sampler: Any = "tpe", pruner: Any = "median", max_epochs: int | None = None,
             base_seed: int = 0, worker_index: int = 0, heartbeat_interval: int | None = 30,
             poll_s: float = 2.0) -> Tuner:
        """Create (or load) the study in ``storage_url`` with heartbeats; record its sampler and pruner configs."""
        storage = open_storage(storage_url, heartbeat_interval)
        sampler_cfg = sampler_config(sampler)
        pruner_cfg = pruner_config(pruner, max_epochs=max_epochs)
        pruner_obj = build_pruner(pruner_cfg)
        study = optuna.create_study(study_name=study_name, storage=storage,
                                    direction=optuna.study.StudyDirection[direction.upper()],
                                    pruner=pruner_obj, load_if_exists=True)
        study.set_user_attr(SAMPLER_ATTR, sampler_cfg)
        study.set_user_attr(PRUNER_ATTR, pruner_cfg)
        return cls(study, storage, space, n_trials, sampler_cfg, pruner_obj, base_seed=base_seed,
                   worker_index=worker_index, lock=queue_lock(storage_url), poll_s=poll_s)

    def _count(self, *states: TrialState) -> int:
        return len(self.study.get_trials(deepcopy=False, states=states))

    def finished(self) -> int:
        """Complete and pruned trials in the study, from every worker and earlier run."""
        return self._count(*FINISHED)

    def remaining(self) -> int:
        """Finished trials still missing from ``n_trials`` (0 also when a grid sampler's grid is done)."""
        return 0 if self._exhausted else max(self.n_trials - self.finished(), 0)

    def _reseed(self) -> None:
        seed = self.base_seed
        if self.sampler_config["_target_"] not in SHARED_SEED_SAMPLERS:
            seed = sampler_seed(self.base_seed, self.worker_index, len(self.study.get_trials(deepcopy=False)))
        sampler = build_sampler(self.sampler_config, seed, grid_of(self.space))
        self.study = optuna.load_study(study_name=self.study.study_name, storage=self.storage,
                                       sampler=sampler, pruner=self.pruner)

    def ask(self, k: int = 1) -> list[optuna.Trial]:
        """Up to ``k`` new RUNNING trials, each beating until told: stale trials re-queued first, then
        queued ones, then the sampler's. Fewer (or none) when running trials fill the budget."""
        trials: list[optuna.Trial] = []
        with self.lock:
            with quiet_experimental():
                fail_stale_trials(self.study)
            # One read for both counts: a trial told between two reads would count in neither.
            states = [t.state for t in self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))]
            finished = len(states) - states.count(TrialState.RUNNING)
            budget = 0 if self._exhausted else max(self.n_trials - finished, 0)
            free = budget - states.count(TrialState.RUNNING)
            for _ in range(max(min(k, free), 0)):
                self._reseed()
                with warnings.catch_warnings():  # we beat ourselves, outside study.optimize
                    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    trial = self.study.ask(self.space)
                trial_id = self.storage.get_trial_id_from_study_id_trial_number(self._study_id, trial.number)
                self.heartbeat.add(trial_id)
                self._pending[trial.number] = trial_id
                trials.append(trial)
        return trials

    def trial_user_attrs(self, trial: optuna.Trial) -> dict[str, Any]:
        """A trial's user attributes as stored now (a job in another process may have written them)."""
        trial_id = self._pending.get(trial.number)
        if trial_id is None:
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self._study_id, trial.number)
        return self.storage.get_trial(trial_id).user_attrs

    def tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        """Finish ``trial``: COMPLETE with a finite value, PRUNED or FAIL as given, FAIL for None/NaN/inf."""
        if isinstance(outcome, TrialState):
            if outcome not in (TrialState.PRUNED, TrialState.FAIL):
                raise ValueError(f"outcome={outcome!r} is invalid: allowed a value, TrialState.PRUNED or FAIL")
            told: dict[str, Any] = {"state": outcome}
        elif outcome is not None and math.isfinite(outcome):
            told = {"values": float(outcome)}
        else:
            told = {"state": TrialState.FAIL}
        try:
            self.study.tell(trial.number, **told, skip_if_finished=True)
        except RuntimeError as exc:
            # GridSampler calls study.stop() when its grid is done, which Optuna allows only inside
            # optimize; the trial is stored before that raises (Optuna's documented ask/tell workaround).
            if self.sampler_config["_target_"] != GRID_SAMPLER or "Study.stop" not in str(exc):
                raise
            self._exhausted = True
        finally:
            self.heartbeat.discard(self._pending.pop(trial.number, -1))

    def run(self, evaluate: Callable[[list[optuna.Trial]], Sequence[Outcome]], batch: int = 1) -> int:
        """Ask up to ``batch`` trials, ``evaluate`` them, tell each outcome, until :meth:`remaining` is 0.

        ``evaluate`` may :meth:`tell` some of its trials itself as soon as they end (a population member
        pruned or diverged while its mates train on); ``run`` tells the others.

        While running trials of other workers fill the budget it waits for them (with heartbeats, a
        dead one is re-queued and taken here); without heartbeats it stops. Returns the trials it told.
        """
        told = 0
        while self.remaining() > 0:
            trials = self.ask(batch)
            if not trials:
                if not self.heartbeat.enabled:
                    break
                log.info("waiting for %d running trial(s) of other workers", self._count(TrialState.RUNNING))
                time.sleep(self.poll_s)
                continue
            outcomes = list(evaluate(trials))
            for trial, outcome in zip(trials, outcomes, strict=True):
                if trial.number in self._pending:  # ``evaluate`` may have told some itself (a member that left early)
                    self.tell(trial, outcome)
            told += len(trials)
        return told

    def close(self) -> None:
        """Fail and re-queue the trials asked and not told (the next ask anywhere takes them); stop beating."""
        callback = retry_callback()
        for number, trial_id in list(self._pending.items()):
            if self.storage.get_trial(trial_id).state == TrialState.RUNNING:  # not failed as stale already
                with quiet_experimental():
                    callback(self.study, self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True))
            self.heartbeat.discard(self._pending.pop(number))
        self.heartbeat.close()

    def __enter__(self) -> Tuner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
