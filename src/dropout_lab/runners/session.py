"""The trials a worker holds: each RUNNING and beating from its claim (or ask) until it is told, and told once.

Grid workers hold the queued trials they claimed, tuners the trials they asked for, sweeper jobs the
trials their sweeper launched them for. When a session closes (the worker ends, Ctrl-C, an error),
the trials it still holds are failed and queued again for the next worker; a trial that is already
finished is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from dropout_lab.compat import running_trial
from dropout_lab.store import trial_records
from dropout_lab.store.heartbeat import Heartbeat, quiet_experimental, retry_callback
from dropout_lab.training.run_record import RunRecord, Status


class TrialSession:
    """Holds trials of ``study`` (beating for each) and tells each its runs' end on ``metric`` (a run-table
    column: a trial of several seed runs is told their mean)."""

    def __init__(self, study: optuna.Study, storage: BaseStorage, metric: str,
                 heartbeat_interval: int | None = None) -> None:
        self.study, self.storage, self.metric = study, storage, metric
        self.heartbeat = Heartbeat(storage, heartbeat_interval)
        self._study_id = storage.get_study_id_from_name(study.study_name)
        self.pending: dict[int, int] = {}  # trial number -> trial id, held and not yet told

    def trial_id(self, number: int) -> int:
        return self.pending.get(number) or self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    def hold(self, trial_id: int, trial: optuna.Trial | None = None) -> optuna.Trial:
        """Beat for the RUNNING trial ``trial_id`` until it is told; its handle (``trial``, e.g. from ``Study.ask``,
        or a new one), to report and to suggest with."""
        self.heartbeat.add(trial_id)
        trial = trial or running_trial(self.study, trial_id)
        self.pending[trial.number] = trial_id
        return trial

    def held(self, trial: optuna.Trial) -> bool:
        return trial.number in self.pending

    def release(self, number: int) -> None:
        """Stop holding trial ``number`` (and beating for it) without telling it: it was told, or another
        process tells it (a sweeper tells the trials its jobs trained)."""
        self.heartbeat.discard(self.pending.pop(number, -1))

    def tell(self, trial: optuna.Trial, records: Sequence[RunRecord] | None) -> None:
        """Finish ``trial`` from its runs' records (one per seed; see ``store.trial_records.tell``) and stop
        beating for it."""
        try:
            trial_records.tell(self.study, trial, records, self.metric)
        finally:
            self.release(trial.number)

    def stored_records(self, trial: optuna.Trial) -> list[RunRecord] | None:
        """The records a trial holds now (a job in another process may have stored them)."""
        return trial_records.stored_records(self.storage.get_trial(self.trial_id(trial.number)).user_attrs)

    def close(self, reason: str = "the worker stopped before this run ended") -> None:
        """Fail and re-queue the trials held and not told (the next worker takes them), recording ``reason`` in
        those that hold no record of their own; stop beating."""
        callback = retry_callback()
        for number, trial_id in list(self.pending.items()):
            stored = self.storage.get_trial(trial_id)
            if stored.state == TrialState.RUNNING:  # not failed as stale already
                if "status" not in stored.user_attrs:
                    self.storage.set_trial_user_attr(trial_id, "status", Status.INTERRUPTED.value)
                    self.storage.set_trial_user_attr(trial_id, "reason", reason)
                with quiet_experimental():
                    callback(self.study, self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True))
            self.release(number)
        self.heartbeat.close()

    def __enter__(self) -> TrialSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(*([f"{type(exc).__name__}: {exc}"] if exc is not None else []))
