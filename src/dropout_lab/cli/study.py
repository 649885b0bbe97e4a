"""``dropout-lab study run|status|export|show`` (``study report`` is ``dropout_lab.cli.report``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dropout_lab.config.paths import STUDIES_DIR
from dropout_lab.config.study_spec import StudySpec, load_spec, study_ref
from dropout_lab.errors import DropoutLabError
from dropout_lab.runners.launch import LOCAL, RunOptions
from dropout_lab.store.backends import open_storage
from dropout_lab.store.study_setup import open_study, total_runs
from dropout_lab.store.trial_records import progress_counts

if TYPE_CHECKING:
    import optuna


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropout-lab study")
    sub = parser.add_subparsers(dest="action", required=True)
    for action in ("run", "status", "export", "show"):
        p = sub.add_parser(action)
        p.add_argument("name", help=f"a study in {STUDIES_DIR} or a path to a study file")
        p.add_argument("fields", nargs="*", metavar="KEY=VALUE",
                       help="study field overrides, e.g. seeds=[0,1] epochs=2, or a parameter: technique=gamma")
        if action != "show":
            p.add_argument("--storage", help="storage URL (default: sqlite under the results folder)")
            p.add_argument("--results-dir", default=RunOptions().results_dir)
    run = sub.choices["run"]
    run.add_argument("--jobs", type=int, default=1, help="local workers (threads split between them)")
    run.add_argument("--heartbeat", type=int, default=30, help="seconds between worker heartbeats")
    run.add_argument("--launcher", default=LOCAL,
                     help=f"{LOCAL!r}: one process per worker (default); or a Hydra launcher (submitit_local, ...)")
    run.add_argument("--population", default="1", metavar="K|auto|1",
                     help="train up to K compatible runs together as one fused population per worker; 'auto' "
                          "picks K from the device and free memory; 1 (default): one run at a time")
    run.add_argument("--population-precision", default="fp32", choices=["fp32", "bf16"],
                     help="numeric mode of populations: fp32 (default) or bf16 autocast")
    run.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                     help="extra Hydra override for every run (repeatable)")
    sub.choices["export"].add_argument("--out", help="folder for the tables (default: results/studies/NAME/export)")
    return parser


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """Options and field overrides in any order (``run ex1_rates --jobs 2 seeds=[0,1]``)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    flags = [e for e in extra if e.startswith("-")]
    if flags:
        parser.error(f"unrecognized arguments: {' '.join(flags)}")
    args.fields = [*args.fields, *extra]
    if Path(args.name).suffix in (".yaml", ".yml") and Path(args.name).is_file():
        args.name = str(Path(args.name).resolve())  # a user's study file, for workers started elsewhere
    return args


def _open(args: argparse.Namespace) -> tuple[StudySpec, RunOptions, optuna.Study]:
    spec = load_spec(args.name, args.fields)
    options = RunOptions(storage_url=args.storage, results_dir=args.results_dir)
    try:
        study = open_study(spec, open_storage(options.storage, heartbeat_interval=None))
    except KeyError:
        raise DropoutLabError(f"study {spec.name!r} is not in {options.storage} yet; run it first") from None
    return spec, options, study


def study_main(argv: Sequence[str]) -> int:
    """Entry point of ``dropout-lab study``; returns the exit status."""
    args = _parse(argv)
    try:
        if args.action == "show":
            spec = load_spec(args.name, args.fields)
            print(f"{spec.name}: {spec.question}\n  total runs: {total_runs(spec)}")
            if not spec.is_tuning:
                from dropout_lab.config.study_grid import multirun_command

                print(f"  plain Hydra multirun of the same grid:\n    {multirun_command(spec)}")
            return 0
        if args.action == "run":
            if args.jobs < 1:
                raise DropoutLabError(f"--jobs={args.jobs} is invalid: allowed an integer >= 1")
            from dropout_lab.config.engine import parse_population
            from dropout_lab.runners.launch import run_study

            population = str(parse_population(args.population, "--population"))
            spec = load_spec(args.name, args.fields)
            options = RunOptions(jobs=args.jobs, storage_url=args.storage, results_dir=args.results_dir,
                                 heartbeat=args.heartbeat, overrides=args.override, launcher=args.launcher,
                                 population=population, population_precision=args.population_precision)
            counts = run_study(spec, study_ref(args.name, args.fields), options)
        else:
            spec, options, study = _open(args)
            counts = progress_counts(study, total_runs(spec))
            if args.action == "export":
                from dropout_lab.store.run_tables import export_tables  # pandas: for export only

                out = Path(args.out or Path(options.results_dir) / "studies" / spec.name / "export")
                written = export_tables(study, out)
                print(f"wrote {out}/" + ", ".join(f"{n}.csv, {n}.parquet" for n in written))
    except DropoutLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0 if counts["remaining"] == 0 or args.action != "run" else 1
