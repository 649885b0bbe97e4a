"""Open an Optuna storage from a URL, failing early with a message that names the URL."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import optuna
from filelock import FileLock
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from dropout_lab.errors import StorageError

log = logging.getLogger(__name__)

SUPPORTED = "sqlite:///PATH, postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, or journal:///PATH"
#: A killed worker's trial is retried this many times at most.
MAX_RETRY = 3
CREATE_ATTEMPTS = 3


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning only: its heartbeat helpers still carry the mark (since 2.8)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def retry_callback() -> RetryHeartbeatStaleTrialCallback:
    """Re-queues a trial whose worker died or was interrupted, at most ``MAX_RETRY`` times."""
    with quiet_experimental():
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def queue_lock(url: str) -> contextlib.AbstractContextManager:
    """A lock around claiming queued runs and re-queueing stale ones, across all local workers.

    SQLite has no row locks (Optuna's ``SELECT ... FOR UPDATE`` is a plain read there), so two
    workers can both see a stale run RUNNING and both re-queue it, and the run is then done
    twice (seen in a test: two workers relaunched at once re-queued each killed run twice). A file
    lock next to the database serializes those steps; SQLite is single-host anyway. PostgreSQL's
    row locks already serialize them, and the journal storage has no heartbeats.
    """
    if url.startswith("sqlite:///"):
        return FileLock(url[len("sqlite:///"):] + ".lock")
    return contextlib.nullcontext()


def default_storage_url(results_dir: str | os.PathLike) -> str:
    """The embedded store: one SQLite file under the results folder."""
    return f"sqlite:///{Path(results_dir).resolve() / 'studies.db'}"


def _check_writable_folder(folder: Path, url: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise StorageError(f"storage {url!r}: folder {folder} is not writable ({exc.strerror})") from None


def open_storage(url: str, heartbeat_interval: int | None = 30, grace_period: int | None = None) -> BaseStorage:
    """Return a ready storage for ``url``.

    RDB storages (SQLite, PostgreSQL) get heartbeats: a trial whose worker stops beating for
    ``grace_period`` seconds (default 4 heartbeats) is failed and re-queued once, by whichever
    worker notices first (Optuna's ``RetryHeartbeatStaleTrialCallback``).
    """
    heartbeat: dict[str, Any] = {}
    engine: dict[str, Any]
    if heartbeat_interval:
        heartbeat = {"heartbeat_interval": heartbeat_interval,
                     "grace_period": grace_period or 4 * heartbeat_interval,
                     "heartbeat_stale_trial_callback": retry_callback()}
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        _check_writable_folder(path.parent, url)
        engine = {"connect_args": {"timeout": 60}}
    elif url.startswith(("postgresql://", "postgresql+psycopg2://")):
        engine = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    elif url.startswith("journal:///"):
        path = Path(url[len("journal:///") - 1:])
        _check_writable_folder(path.parent, url)
        return JournalStorage(JournalFileBackend(str(path)))
    else:
        raise StorageError(f"storage {url!r} is not supported: use {SUPPORTED}")
    # Two processes creating the tables of a new database at once can collide; the loser retries.
    for attempt in range(CREATE_ATTEMPTS):
        try:
            with quiet_experimental():  # heartbeat_interval is still marked experimental
                return RDBStorage(url, engine_kwargs=engine, **heartbeat)
        except Exception as exc:  # sqlalchemy, driver and optuna errors alike
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if attempt + 1 < CREATE_ATTEMPTS:
                time.sleep(1.0 + attempt)
    raise StorageError(f"cannot open storage {url!r}: {reason}")


def heartbeat_interval(storage: BaseStorage) -> int | None:
    """The storage's heartbeat interval in seconds; None when it has no heartbeats (journal, or not enabled)."""
    get_interval = getattr(storage, "get_heartbeat_interval", None)
    return get_interval() if get_interval else None


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
