"""Open an Optuna storage from a URL (SQLite, PostgreSQL, journal), failing early with a message that names the URL."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from dropout_lab.errors import StorageError
from dropout_lab.store.heartbeat import quiet_experimental, retry_callback

log = logging.getLogger(__name__)

SUPPORTED = "sqlite:///PATH, postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, or journal:///PATH"
CREATE_ATTEMPTS = 3


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
                     "heartbeat_stale_trial_callback": retry_callback()}  # see store/heartbeat.py
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        _check_writable_folder(path.parent, url)
        engine = {"connect_args": {"timeout": 60}}
    elif url.startswith(("postgresql://", "postgresql+psycopg://")):  # psycopg 3, SQLAlchemy's default driver
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
