"""``dropout-lab study run|status|export|show`` (``study report`` is ``dropout_lab.cli.report``).

Their options are in the one argument tree, :mod:`dropout_lab.cli.parser`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropout_lab.config.study_spec import StudySpec, load_spec, study_ref
from dropout_lab.errors import DropoutLabError
from dropout_lab.runners.launch import LOCAL, RunOptions
from dropout_lab.store.backends import open_storage
from dropout_lab.store.study_setup import current_total, open_study, total_runs
from dropout_lab.store.trial_records import progress_counts

if TYPE_CHECKING:
    import optuna


def _study_name(name: str) -> str:
    """A user's study file as an absolute path, for workers started elsewhere; a shipped study's name as is."""
    if Path(name).suffix in (".yaml", ".yml") and Path(name).is_file():
        return str(Path(name).resolve())
    return name


def _options(args: argparse.Namespace, **more: Any) -> RunOptions:
    """Run options from ``--storage`` and ``--results-dir`` (unset: RunOptions' default) and ``more``."""
    if args.results_dir:
        more["results_dir"] = args.results_dir
    return RunOptions(storage_url=args.storage, **more)


def open_stored_study(args: argparse.Namespace) -> tuple[StudySpec, RunOptions, optuna.Study]:
    """The study ``args.name`` with ``args.fields``, from its store; it must have been run."""
    spec = load_spec(args.name, args.fields)
    options = _options(args)
    try:
        study = open_study(spec, open_storage(options.storage, heartbeat_interval=None))
    except KeyError:
        raise DropoutLabError(f"study {spec.name!r} is not in {options.storage} yet; run it first") from None
    return spec, options, study


def study_main(args: argparse.Namespace) -> int:
    """Run ``dropout-lab study run|status|export|show``, parsed; returns the exit status."""
    args.name = _study_name(args.name)
    try:
        if args.action == "show":
            spec = load_spec(args.name, args.fields)
            print(f"{spec.name}: {spec.question}\n  total runs: {total_runs(spec)}")
            if spec.design:
                d = spec.design
                runs_at_max = total_runs(spec.at_look(d.max))
                print(f"  sequential seeds {d.first}..{d.first + d.max - 1}: looks at {d.looks()} seeds, until every "
                      f"comparison of the plan is decided; at most {runs_at_max} runs (the total above is the "
                      "first look's)")
            if not spec.is_tuning:
                from dropout_lab.config.study_grid import multirun_command

                print(f"  plain Hydra multirun of the same grid:\n    {multirun_command(spec)}")
            return 0
        if args.action == "run":
            if args.jobs < 1:
                raise DropoutLabError(f"--jobs={args.jobs} is invalid: allowed an integer >= 1")
            from dropout_lab.config.engine import parse_population
            from dropout_lab.runners.launch import run_study

            spec = load_spec(args.name, args.fields)
            population = str(parse_population(args.population, "--population"))
            options = _options(args, jobs=args.jobs, heartbeat=args.heartbeat, overrides=args.override,
                               launcher=args.launcher or LOCAL, population=population,
                               population_precision=args.population_precision)
            if spec.design:
                from dropout_lab.runners.sequential_study import INCOMPLETE, run_sequential

                outcome = run_sequential(spec, study_ref(args.name, args.fields), options)
                print(f"sequential={outcome.status.replace(' ', '_')} seeds={outcome.n} looks={outcome.looks} "
                      f"undecided={len(outcome.undecided)}")
                return 1 if outcome.status == INCOMPLETE else 0
            counts = run_study(spec, study_ref(args.name, args.fields), options)
        else:
            spec, options, study = open_stored_study(args)
            counts = progress_counts(study, current_total(spec, study))
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
