"""The ``dropout-lab`` argument tree: every command, option and help text, written once.

Building the tree imports nothing heavier than argparse (no Hydra, Optuna or torch), so
``dropout-lab --help`` answers at once; help texts that name a package value (the studies folder,
the local launcher) get it only when help is printed. ``train`` and ``worker`` are Hydra
applications: the tree lists them, and everything after their name goes to Hydra untouched.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]  # what add_subparsers() returns


def _studies_dir() -> str:
    from dropout_lab.config.paths import STUDIES_DIR  # imports Hydra's config store: only when help is printed

    return str(STUDIES_DIR)


def _local_launcher() -> str:
    from dropout_lab.runners.launch import LOCAL

    return repr(LOCAL)


#: ``{name}`` in a help text: the value, looked up when help is printed.
_HELP_VALUES: dict[str, Callable[[], str]] = {"studies_dir": _studies_dir, "local": _local_launcher}


class _Formatter(argparse.HelpFormatter):
    """Fills the ``{name}`` placeholders of :data:`_HELP_VALUES` in help texts; aligns sub-command lists."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if action.help is not argparse.SUPPRESS and isinstance(action.choices, dict):  # sub-commands
            # argparse (3.11) measures them without their extra indent, so the longest name wraps its help
            widest = max(map(len, action.choices)) + self._current_indent + self._indent_increment
            self._action_max_length = max(self._action_max_length, widest)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        for name, value in _HELP_VALUES.items():
            if text and f"{{{name}}}" in text:
                text = text.replace(f"{{{name}}}", value().replace("%", "%%"))
        return text


#: The Hydra applications: their arguments pass through to Hydra.
HYDRA_COMMANDS = ("train", "worker")
#: The study actions that read or write the study store (``--storage``, ``--results-dir``).
_STORE_ACTIONS = ("run", "status", "export", "report")


def _add(sub: _Subparsers, name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A sub-command parser that remembers itself (``args.parser``) for usage errors found after parsing."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, formatter_class=_Formatter, **kwargs)
    parser.set_defaults(parser=parser)
    return parser


def _hydra_command(sub: _Subparsers, name: str, help: str) -> None:
    """A Hydra application: no options of its own, so ``--help`` and ``--multirun`` reach Hydra."""
    _add(sub, name, help, add_help=False).add_argument("overrides", nargs=argparse.REMAINDER)


def _train(sub: _Subparsers, name: str) -> None:
    _hydra_command(sub, name, "train one run (or a --multirun sweep) and record it")


def _worker(sub: _Subparsers, name: str) -> None:
    _hydra_command(sub, name, "run a study's queued runs: study=NAME (launch many with --multirun)")


def _study(sub: _Subparsers, name: str) -> None:
    """One parser per action, sharing the study name and KEY=VALUE field overrides."""
    study = _add(sub, name, "define, run, follow, export and report a study",
                 description="Studies: a question answered by a grid or a search over runs, stored in a study "
                             "store. Options and KEY=VALUE field overrides may come in any order.")
    actions = study.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)
    helps = {"run": "run what is missing from a study",
             "status": "done, running, failed, remaining",
             "export": "tidy run table and per-epoch table (CSV + Parquet)",
             "show": "the study definition and its plain Hydra multirun",
             "report": "analyse the stored runs, write reports/NAME/README.md"}
    parsers = {action: _add(actions, action, text, description=f"dropout-lab study {action}: {text}.")
               for action, text in helps.items()}
    for action, parser in parsers.items():
        parser.add_argument("name", help="a study in {studies_dir} or a path to a study file")
        parser.add_argument("fields", nargs="*", metavar="KEY=VALUE",
                            help="study field overrides, e.g. seeds=[0,1] epochs=2, or a parameter: technique=gamma")
        if action in _STORE_ACTIONS:
            parser.add_argument("--storage", help="storage URL (default: sqlite under the results folder)")
            parser.add_argument("--results-dir")
    run = parsers["run"]
    run.add_argument("--jobs", type=int, default=1, help="local workers (threads split between them)")
    run.add_argument("--heartbeat", type=int, default=30, help="seconds between worker heartbeats")
    run.add_argument("--launcher", help="{local}: one process per worker (default); or a Hydra launcher "
                                        "(submitit_local, ...)")
    run.add_argument("--population", default="1", metavar="K|auto|1",
                     help="train up to K compatible runs together as one fused population per worker; 'auto' "
                          "picks K from the device and free memory; 1 (default): one run at a time. With a sequential "
                          "seed design, --population BATCH trains each cell's new batch of seeds as one population")
    run.add_argument("--population-precision", default="fp32", choices=["fp32", "bf16"],
                     help="numeric mode of populations: fp32 (default) or bf16 (bfloat16 matmuls and activations)")
    run.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                     help="extra Hydra override for every run (repeatable)")
    parsers["export"].add_argument("--out", help="folder for the tables (default: results/studies/NAME/export)")
    parsers["report"].add_argument("--reports-dir",
                                   help="where reports go (default: reports/ under the current folder)")


def _runs(sub: _Subparsers, name: str) -> None:
    parser = _add(sub, name, "print a table of the run records under FOLDER")
    parser.add_argument("folder", metavar="FOLDER")


def _evaluate(sub: _Subparsers, name: str) -> None:
    parser = _add(sub, name, "test-time evaluation of a run saved with test_time.checkpoint=true",
                  description="Test-time evaluation (noise off, single noisy passes, MC averages) of a run trained "
                              "with test_time.checkpoint=true.")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--T", type=int, nargs="+", default=None,
                        help="numbers of passes to average (default: the run's test_time.T)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the noisy passes (default: the run's)")
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST folder, if not the recorded one")


def _dashboard(sub: _Subparsers, name: str) -> None:
    parser = _add(sub, name, "browse the study store in optuna-dashboard",
                  description="Serve optuna-dashboard for a study store until Ctrl-C.")
    parser.add_argument("--storage", help="storage URL (default: the embedded store RESULTS_DIR/studies.db)")
    parser.add_argument("--results-dir")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this host only)")
    parser.add_argument("--port", type=int, default=8080)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``dropout-lab`` tree."""
    parser = argparse.ArgumentParser(
        prog="dropout-lab", formatter_class=_Formatter,
        description="Hyperparameter studies of dropout: train runs (Hydra), run, follow and report studies (Optuna).",
        epilog="`dropout-lab COMMAND --help` shows a command's options; train and worker take Hydra's overrides "
               "and options, and their --help is Hydra's.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    for name, add in _COMMANDS.items():
        add(sub, name)
    return parser


_COMMANDS: dict[str, Callable[[_Subparsers, str], None]] = {
    "train": _train, "worker": _worker, "study": _study, "runs": _runs, "evaluate": _evaluate,
    "dashboard": _dashboard}
#: The top-level commands, in the order of the help.
COMMANDS = tuple(_COMMANDS)


def parse(argv: Sequence[str], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse ``dropout-lab ARGV``; a usage error exits with status 2 (argparse's ``SystemExit``).

    ``train``/``worker``: ``overrides`` is everything after the command name, untouched. ``study``:
    ``fields`` gathers the KEY=VALUE overrides wherever they stand among the options.
    """
    parser = parser or build_parser()
    argv = list(argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        parser.error(f"unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}")
    args, extra = parser.parse_known_args(argv)
    if args.command in HYDRA_COMMANDS:
        args.overrides = argv[argv.index(args.command) + 1:]
        return args
    flags = [e for e in extra if e.startswith("-")]
    if flags or (extra and args.command != "study"):
        args.parser.error(f"unrecognized arguments: {' '.join(flags or extra)}")
    if args.command == "study":
        args.fields = [*args.fields, *extra]
    return args
