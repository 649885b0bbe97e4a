"""``dropout-lab``: the command line.

One argparse tree (:mod:`dropout_lab.cli.parser`) holds every command and its help. ``train`` and
``worker`` are Hydra applications (overrides, ``--multirun``, launchers); ``study``, ``runs``,
``evaluate`` and ``dashboard`` are plain sub-commands, each imported only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dropout_lab.cli.parser import HYDRA_COMMANDS, build_parser, parse


def _runs(args: argparse.Namespace) -> int:
    from dropout_lab.cli.runs import run_records_table

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


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; returns the process exit status."""
    if args.command in HYDRA_COMMANDS:
        return _hydra(args.command, args.overrides)
    if args.command == "runs":
        return _runs(args)
    if args.command == "study" and args.action == "report":
        from dropout_lab.cli.report import report_main

        return report_main(args)
    if args.command == "study":
        from dropout_lab.cli.study import study_main

        return study_main(args)
    if args.command == "evaluate":
        from dropout_lab.cli.evaluate import evaluate

        return evaluate(args)
    from dropout_lab.cli.dashboard import dashboard_main  # the last command of the tree

    return dashboard_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run it; returns the process exit status (2: a usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 2
    try:
        args = parse(argv, parser)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
