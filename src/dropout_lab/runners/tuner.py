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
fused population and tells each (a pruned or diverged member as soon as it leaves). A trial may hold several
runs, one per seed (``runners/worker.py``): it is told once all of them ended, with their mean. Trials are held and
told as every worker's are (:class:`~dropout_lab.runners.session.TrialSession`).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.storages import BaseStorage
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
from dropout_lab.runners.session import TrialSession
from dropout_lab.store.backends import open_storage
from dropout_lab.store.claims import orphans_lock, queue_lock, requeue_stale
from dropout_lab.training.run_record import RunRecord

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Seeds of different workers stay apart for this many stored trials.
SEED_STRIDE = 100_000
#: Samplers whose seed shuffles or scrambles one sequence of points that all workers must share.
SHARED_SEED_SAMPLERS = (GRID_SAMPLER, "optuna.samplers.QMCSampler")
#: Study user attributes holding the resolved sampler and pruner configs (sweeper jobs rebuild the pruner from them).
SAMPLER_ATTR, PRUNER_ATTR = "sampler", "pruner"
def study_seed(spec: StudySpec) -> int:
    """A tuning study's base seed: its first run seed offset by its name, so that studies with the same
    run seed (the seven ``ex7_tune`` techniques) draw different candidates."""
    return spec.seed_list[0] + zlib.crc32(spec.name.encode()) % 100_000


def sampler_seed(base: int, worker_index: int, stored: int) -> int:
    """The one seeding policy: ``base`` offset by the trials already stored and by the worker's index."""
    return (base + stored + SEED_STRIDE * worker_index) % 2**32


def grid_of(space: Mapping[str, BaseDistribution]) -> dict[str, list[Any]]:
    """The categorical dimensions of a search space: a grid sampler's default search space."""
    return {key: list(dist.choices) for key, dist in space.items() if isinstance(dist, CategoricalDistribution)}


class Tuner(TrialSession):
    """Ask trials of one study and tell their runs' ends on ``metric`` (a run-table column; a trial of several
    seed runs is told their mean), until it holds ``n_trials`` finished trials.

    Open it with :meth:`open`; use it as a context manager, so that trials still asked but not told
    when it closes (Ctrl-C, a crashed launcher) are failed and re-queued for the next worker.
    """

    def __init__(self, study: optuna.Study, storage: BaseStorage, space: Mapping[str, BaseDistribution],
                 n_trials: int, sampler: Mapping[str, Any], pruner: optuna.pruners.BasePruner, *,
                 metric: str = "val_acc", base_seed: int = 0, worker_index: int = 0,
                 lock: contextlib.AbstractContextManager | None = None, poll_s: float = 2.0,
                 orphans: contextlib.AbstractContextManager | None = None) -> None:
        super().__init__(study, storage, metric)
        self.space = dict(space)
        self.sampler_config, self.pruner = dict(sampler), pruner
        self.base_seed = int(self.sampler_config.pop("seed", base_seed))
        self.worker_index, self.poll_s = worker_index, poll_s
        points = grid_size(self.sampler_config, grid_of(space))
        self.n_trials = n_trials if points is None else min(n_trials, points)
        self.lock = lock or contextlib.nullcontext()
        self.orphans = orphans or contextlib.nullcontext()
        self._exhausted = False

    @classmethod
    def open(cls, storage_url: str, study_name: str, *, direction: str, space: Mapping[str, BaseDistribution],
             n_trials: int, metric: str = "val_acc", sampler: Any = "tpe", pruner: Any = "median",
             max_epochs: int | None = None, base_seed: int = 0, worker_index: int = 0,
             heartbeat_interval: int | None = 30, poll_s: float = 2.0) -> Tuner:
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
        return cls(study, storage, space, n_trials, sampler_cfg, pruner_obj, metric=metric, base_seed=base_seed,
                   worker_index=worker_index, lock=queue_lock(storage_url), poll_s=poll_s,
                   orphans=orphans_lock(storage_url))

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
            requeue_stale(self.study, self.orphans)
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
                trials.append(self.hold(self.trial_id(trial.number), trial))
        return trials

    def tell(self, trial: optuna.Trial, records: Sequence[RunRecord] | None) -> None:
        """Finish ``trial`` from its runs' records, as every worker does (``TrialSession.tell``)."""
        try:
            super().tell(trial, records)
        except RuntimeError as exc:
            # GridSampler calls study.stop() when its grid is done, which Optuna allows only inside
            # optimize; the trial is stored before that raises (Optuna's documented ask/tell workaround).
            if self.sampler_config["_target_"] != GRID_SAMPLER or "Study.stop" not in str(exc):
                raise
            self._exhausted = True

    def run(self, evaluate: Callable[[list[optuna.Trial]], None], batch: int = 1) -> int:
        """Ask up to ``batch`` trials, ``evaluate`` them, until :meth:`remaining` is 0; returns the trials asked.

        ``evaluate`` trains the trials' runs and tells each trial as its runs end (a trial pruned, or of one
        run that diverged, while its mates train on is told at once); a trial it leaves untold is told from
        the records stored in it (a sweeper's job stores them from another process), FAIL without them.

        While running trials of other workers fill the budget it waits for them (with heartbeats, a
        dead one is re-queued and taken here); without heartbeats it stops.
        """
        asked = 0
        while self.remaining() > 0:
            trials = self.ask(batch)
            if not trials:
                if not self.heartbeat.enabled:
                    break
                log.info("waiting for %d running trial(s) of other workers", self._count(TrialState.RUNNING))
                time.sleep(self.poll_s)
                continue
            evaluate(trials)
            for trial in trials:
                if self.held(trial):
                    self.tell(trial, self.stored_records(trial))
            asked += len(trials)
        return asked
