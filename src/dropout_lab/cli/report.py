"""``dropout-lab study report NAME``: analyse a study's stored runs and write its report.

Dispatched by the top-level command (``dropout_lab.cli``), so that ``studies/`` never imports ``reports/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dropout_lab.config.paths import STUDIES_DIR
from dropout_lab.config.study_spec import load_spec
from dropout_lab.errors import DropoutLabError
from dropout_lab.runners.launch import RunOptions
from dropout_lab.store.backends import open_storage
from dropout_lab.store.study_setup import open_study, total_runs
from dropout_lab.store.trial_records import progress_counts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropout-lab study report")
    parser.add_argument("name", help=f"a study in {STUDIES_DIR} or a path to a study file")
    parser.add_argument("fields", nargs="*", metavar="KEY=VALUE",
                        help="study field overrides or parameters, as for the other study commands")
    parser.add_argument("--storage", help="storage URL (default: sqlite under the results folder)")
    parser.add_argument("--results-dir", default=RunOptions().results_dir)
    parser.add_argument("--reports-dir", help="where reports go (default: reports/ under the current folder)")
    return parser


def report_main(argv: Sequence[str]) -> int:
    """Entry point of ``dropout-lab study report``; returns the exit status."""
    from dropout_lab.reports.build import build_report
    from dropout_lab.reports.writer import REPORTS_DIR

    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # options and fields in any order
    if any(e.startswith("-") for e in extra):
        parser.error(f"unrecognized arguments: {' '.join(e for e in extra if e.startswith('-'))}")
    try:
        spec = load_spec(args.name, [*args.fields, *extra])
        options = RunOptions(storage_url=args.storage, results_dir=args.results_dir)
        try:
            study = open_study(spec, open_storage(options.storage, heartbeat_interval=None))
        except KeyError:
            raise DropoutLabError(f"study {spec.name!r} is not in {options.storage} yet; run it first") from None
        path = build_report(spec, study, Path(args.reports_dir or REPORTS_DIR))
    except DropoutLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    print(" ".join(f"{k}={v}" for k, v in progress_counts(study, total_runs(spec)).items()))
    return 0
