"""``dropout-lab study report NAME``: analyse a study's stored runs and write its report.

Dispatched by the top-level command (``dropout_lab.cli``), so that ``studies/`` never imports ``reports/``;
its options are in the one argument tree, :mod:`dropout_lab.cli.parser`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dropout_lab.cli.study import open_stored_study
from dropout_lab.errors import DropoutLabError
from dropout_lab.store.study_setup import current_total
from dropout_lab.store.trial_records import progress_counts


def report_main(args: argparse.Namespace) -> int:
    """Run ``dropout-lab study report``, parsed; returns the exit status."""
    from dropout_lab.reports.build import build_report
    from dropout_lab.reports.writer import REPORTS_DIR

    try:
        spec, options, study = open_stored_study(args)
        path = build_report(spec, study, Path(args.reports_dir or REPORTS_DIR), storage=options.storage)
    except DropoutLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    print(" ".join(f"{k}={v}" for k, v in progress_counts(study, current_total(spec, study)).items()))
    return 0
