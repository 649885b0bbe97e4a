"""``dropout-lab study run|status|export|show``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dropout_lab.errors import DropoutLabError
from dropout_lab.studies.grid import multirun_command
from dropout_lab.studies.prepare import load_study, total_runs
from dropout_lab.studies.runner import RunOptions, run_study
from dropout_lab.studies.spec import STUDIES_DIR, load_spec
from dropout_lab.studies.storage import open_storage
from dropout_lab.studies.trial_records import curves_frame, progress_counts, runs_frame


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropout-lab study")
    sub = parser.add_subparsers(dest="action", required=True)
    for action in ("run", "status", "export", "show", "report"):
        p = sub.add_parser(action)
        p.add_argument("name", help=f"a study in {STUDIES_DIR} or a path to a study file")
        if action != "show":
            p.add_argument("--storage", help="storage URL (default: sqlite under the results folder)")
            p.add_argument("--results-dir", default=RunOptions().results_dir)
    run = sub.choices["run"]
    run.add_argument("--jobs", type=int, default=1, help="local workers (threads split between them)")
    run.add_argument("--heartbeat", type=int, default=30, help="seconds between worker heartbeats")
    run.add_argument("--launcher", default="joblib", help="Hydra launcher for --jobs > 1 (joblib, submitit_local)")
    run.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                     help="extra Hydra override for every run (repeatable)")
    sub.choices["export"].add_argument("--out", help="folder for the tables (default: results/studies/NAME/export)")
    sub.choices["report"].add_argument("--reports-dir", help="where reports go (default: the project's reports/)")
    return parser


def _open(args: argparse.Namespace):
    spec = load_spec(args.name)
    options = RunOptions(storage_url=args.storage, results_dir=args.results_dir)
    try:
        study = load_study(spec, open_storage(options.storage, heartbeat_interval=None))
    except KeyError:
        raise DropoutLabError(f"study {spec.name!r} is not in {options.storage} yet; run it first") from None
    return spec, options, study


def study_main(argv: Sequence[str]) -> int:
    """Entry point of ``dropout-lab study``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.action == "show":
            spec = load_spec(args.name)
            print(f"{spec.name}: {spec.question}\n  total runs: {total_runs(spec)}")
            if not spec.is_tuning:
                print(f"  plain Hydra multirun of the same grid:\n    {multirun_command(spec)}")
            return 0
        if args.action == "run":
            if args.jobs < 1:
                raise DropoutLabError(f"--jobs={args.jobs} is invalid: allowed an integer >= 1")
            spec = load_spec(args.name)
            options = RunOptions(jobs=args.jobs, storage_url=args.storage, results_dir=args.results_dir,
                                 heartbeat=args.heartbeat, overrides=args.override, launcher=args.launcher)
            counts = run_study(spec, args.name, options)
        else:
            spec, options, study = _open(args)
            counts = progress_counts(study, total_runs(spec))
            if args.action == "export":
                out = Path(args.out or Path(options.results_dir) / "studies" / spec.name / "export")
                out.mkdir(parents=True, exist_ok=True)
                for table, frame in (("runs", runs_frame(study)), ("curves", curves_frame(study))):
                    frame.to_csv(out / f"{table}.csv", index=False)
                    frame.to_parquet(out / f"{table}.parquet", index=False)
                print(f"wrote {out}/runs.csv, runs.parquet, curves.csv, curves.parquet")
            if args.action == "report":
                from dropout_lab.reports.build import build_report
                from dropout_lab.reports.writer import REPORTS_DIR

                path = build_report(spec, study, Path(args.reports_dir or REPORTS_DIR))
                print(f"report written to {path}")
    except DropoutLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0 if counts["remaining"] == 0 or args.action != "run" else 1
