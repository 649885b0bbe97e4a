"""``dropout-lab``: the command line.

``dropout-lab train [OVERRIDES] [--multirun]`` is a Hydra application; the other commands are
plain sub-commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

USAGE = """usage: dropout-lab COMMAND ...

commands:
  train [HYDRA OVERRIDES]   train one run (or a --multirun sweep) and record it
  runs FOLDER               print a table of the run records under FOLDER
"""


def _runs(argv: Sequence[str]) -> int:
    from dropout_lab.analysis.runs import runs_table

    parser = argparse.ArgumentParser(prog="dropout-lab runs")
    parser.add_argument("folder")
    args = parser.parse_args(argv)
    table = runs_table(args.folder)
    if table.empty:
        print(f"no run records under {args.folder}", file=sys.stderr)
        return 1
    print(table.drop(columns=["run"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a sub-command; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from dropout_lab.app import train_app

        sys.argv = ["dropout-lab train", *rest]
        train_app()
        return 0
    if command == "runs":
        return _runs(rest)
    print(f"error: unknown command {command!r}; choose one of: train, runs\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
