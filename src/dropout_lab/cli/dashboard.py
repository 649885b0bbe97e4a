"""``dropout-lab dashboard``: browse a study store in optuna-dashboard (no torch or Lightning imported)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dropout_lab.errors import DropoutLabError, StorageError
from dropout_lab.runners.launch import RunOptions
from dropout_lab.store.backends import default_storage_url, open_storage


def dashboard_main(args: argparse.Namespace) -> int:
    """Run ``dropout-lab dashboard``, parsed; returns the exit status."""
    results_dir = args.results_dir or RunOptions().results_dir
    url = args.storage or default_storage_url(results_dir)
    try:
        if not args.storage and not (Path(results_dir) / "studies.db").is_file():
            raise StorageError(f"no study store at {Path(results_dir).resolve() / 'studies.db'}: "
                               "run a study first, or pass --storage URL or --results-dir DIR")
        storage = open_storage(url, heartbeat_interval=None)
    except DropoutLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from optuna_dashboard import run_server

    print(f"optuna-dashboard for {url} at http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    try:
        run_server(storage, host=args.host, port=args.port)
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
