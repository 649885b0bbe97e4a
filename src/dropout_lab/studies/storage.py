"""Open an Optuna storage from a URL, failing early with a message that names the URL."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import optuna
import warnings
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from filelock import FileLock

from dropout_lab.errors import StorageError

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

SUPPORTED = "sqlite:///PATH, postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, or journal:///PATH"
#: A killed worker's trial is retried this many times at most.
MAX_RETRY = 3
CREATE_ATTEMPTS = 3


def retry_callback() -> RetryHeartbeatStaleTrialCallback:
    """Re-queues a trial whose worker died or was interrupted, at most ``MAX_RETRY`` times."""
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
    heartbeat = {}
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
            return RDBStorage(url, engine_kwargs=engine, **heartbeat)
        except Exception as exc:  # sqlalchemy, driver and optuna errors alike
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if attempt + 1 < CREATE_ATTEMPTS:
                time.sleep(1.0 + attempt)
    raise StorageError(f"cannot open storage {url!r}: {reason}")
