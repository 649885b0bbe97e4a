"""Heartbeats: a worker beats for the trials it runs; a trial whose beats stop is failed and re-queued."""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from types import TracebackType

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback

log = logging.getLogger(__name__)

#: A killed worker's trial is retried this many times at most.
MAX_RETRY = 3


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning only: its heartbeat helpers still carry the mark (since 2.8)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def heartbeat_interval(storage: BaseStorage) -> int | None:
    """The storage's heartbeat interval in seconds; None when it has no heartbeats (journal, or not enabled)."""
    get_interval = getattr(storage, "get_heartbeat_interval", None)
    return get_interval() if get_interval else None


def retry_callback() -> RetryHeartbeatStaleTrialCallback:
    """Re-queues a trial whose worker died or was interrupted, at most ``MAX_RETRY`` times."""
    with quiet_experimental():
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


class Heartbeat:
    """Beats for a set of trials from one daemon thread while they run, so no other worker fails them.

    Optuna beats only inside ``study.optimize`` and keeps its heartbeat thread private; ask/tell loops,
    queued grid runs and sweeper jobs beat here through the public ``storage.record_heartbeat``.
    ``interval`` defaults to the storage's own; without one (journal storage) this does nothing.
    """

    def __init__(self, storage: BaseStorage, interval: int | None = None) -> None:
        self.storage = storage
        self.interval = interval or heartbeat_interval(storage)
        self._record: Callable[[int], None] | None = getattr(storage, "record_heartbeat", None)  # RDB storages only
        self._trial_ids: set[int] = set()
        self._ids_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.interval) and self._record is not None

    def add(self, trial_id: int) -> None:
        """Beat for ``trial_id`` at once, then every interval until :meth:`discard` or :meth:`close`."""
        if not self.enabled or self._record is None:
            return
        self._record(trial_id)
        with self._ids_lock:
            self._trial_ids.add(trial_id)
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="dropout-lab-heartbeat", daemon=True)
            self._thread.start()

    def discard(self, trial_id: int) -> None:
        """Stop beating for ``trial_id`` (it was told, or handed to someone else)."""
        with self._ids_lock:
            self._trial_ids.discard(trial_id)

    def close(self) -> None:
        """Stop the thread; the trials still held stop beating (and go stale if left RUNNING)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        assert self._record is not None and self.interval
        while not self._stop.wait(self.interval):
            with self._ids_lock:
                trial_ids = sorted(self._trial_ids)
            for trial_id in trial_ids:
                try:
                    self._record(trial_id)
                except Exception as exc:  # a busy database must not end the beats; the next one retries
                    log.warning("heartbeat of trial id %d not recorded: %s", trial_id, exc)

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
