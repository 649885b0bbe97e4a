"""A throw-away PostgreSQL server on loopback, for tests/test_postgres.py and benchmarks/bench_store.py."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def pg_bin(name: str) -> str | None:
    """The newest installed PostgreSQL server binary ``name`` (Debian keeps them off PATH), or None."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def postgres_installed() -> bool:
    """True when ``initdb``, ``pg_ctl`` and ``psql`` are all present."""
    return all(pg_bin(name) for name in ("initdb", "pg_ctl", "psql"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def throwaway_postgres(max_connections: int = 50) -> Iterator[str]:
    """Start a PostgreSQL server in a temporary folder with one database, yield its URL, then stop and remove it."""
    initdb, pg_ctl, psql = pg_bin("initdb"), pg_bin("pg_ctl"), pg_bin("psql")
    if not initdb or not pg_ctl or not psql:
        raise FileNotFoundError("PostgreSQL is not installed (initdb, pg_ctl, psql: Debian package postgresql)")
    base = Path(tempfile.mkdtemp(prefix="dropout-lab-pg-"))  # outside pytest's root-only folders
    data = base / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        os.chmod(base, 0o777)
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                       capture_output=True)
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections={max_connections}"
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"],
                       check=True, capture_output=True)
        subprocess.run([psql, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE lab"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/lab"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
