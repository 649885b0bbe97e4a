"""``dropout-lab dashboard``: browse a study store in optuna-dashboard (no torch or Lightning imported)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dropout_lab.errors import DropoutLabError, StorageError
from dropout_lab.store.backends import default_storage_url, open_storage


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropout-lab dashboard",
                                     description="Serve optuna-dashboard for a study store until Ctrl-C.")
    parser.add_argument("--storage", help="storage URL (default: the embedded store RESULTS_DIR/studies.db)")
    parser.add_argument("--results-dir", default=os.environ.get("DROPOUT_LAB_RESULTS", "results"))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this host only)")
    parser.add_argument("--port", type=int, default=8080)
    return parser


def dashboard_main(argv: Sequence[str]) -> int:
    """Entry point of ``dropout-lab dashboard``; returns the exit status."""
    args = _parser().parse_args(argv)
    url = args.storage or default_storage_url(args.results_dir)
    try:
        if not args.storage and not (Path(args.results_dir) / "studies.db").is_file():
            raise StorageError(f"no study store at {Path(args.results_dir).resolve() / 'studies.db'}: "
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
