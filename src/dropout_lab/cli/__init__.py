"""``dropout-lab``: the command line.

``train`` and ``worker`` are Hydra applications (overrides, ``--multirun``, launchers); ``runs``,
``study`` and ``evaluate`` are plain sub-commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

USAGE = """usage: dropout-lab COMMAND ...

commands:
  train [HYDRA OVERRIDES]        train one run (or a --multirun sweep) and record it
  worker study=NAME [OVERRIDES]  run a study's queued runs (launch many with --multirun)
  study run NAME [KEY=VALUE ...] [--jobs N] [--storage URL]   run what is missing from a study
                                 (NAME: a shipped study or a YAML path; KEY=VALUE: study field overrides,
                                 the same for every study action, e.g. seeds=[0,1] or technique=gamma)
  study status NAME [--storage URL]           done, running, failed, remaining
  study export NAME [--storage URL] [--out DIR]  tidy run table and per-epoch table (CSV + Parquet)
  study show NAME                             the study definition and its plain Hydra multirun
  study report NAME [--reports-dir DIR]       analyse the stored runs, write reports/NAME/README.md
  runs FOLDER                    print a table of the run records under FOLDER
  evaluate RUN_DIR [--T 1 10 100]   test-time evaluation of a run saved with test_time.checkpoint=true
  dashboard [--storage URL] [--port N]   browse the study store in optuna-dashboard
"""
COMMANDS = ("train", "worker", "study", "runs", "evaluate", "dashboard")


def _runs(argv: Sequence[str]) -> int:
    from dropout_lab.cli.runs import run_records_table

    parser = argparse.ArgumentParser(prog="dropout-lab runs")
    parser.add_argument("folder")
    args = parser.parse_args(argv)
    table = run_records_table(args.folder)
    if table.empty:
        print(f"no run records under {args.folder}", file=sys.stderr)
        return 1
    print(table.drop(columns=["run"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _hydra(app_name: str, argv: Sequence[str]) -> int:
    import warnings

    from dropout_lab.app import hydra_apps
    from dropout_lab.config import register_schemas

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    register_schemas()
    sys.argv = [f"dropout-lab {app_name}", *argv]
    getattr(hydra_apps, f"{app_name}_app")()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a sub-command; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in ("train", "worker"):
        return _hydra(command, rest)
    if command == "runs":
        return _runs(rest)
    if command == "study" and rest[:1] == ["report"]:
        from dropout_lab.cli.report import report_main

        return report_main(rest[1:])
    if command == "study":
        from dropout_lab.cli.study import study_main

        return study_main(rest)
    if command == "evaluate":
        from dropout_lab.cli.evaluate import evaluate_main

        return evaluate_main(rest)
    if command == "dashboard":
        from dropout_lab.cli.dashboard import dashboard_main

        return dashboard_main(rest)
    print(f"error: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}\n\n{USAGE}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
