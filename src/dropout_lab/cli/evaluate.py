"""``dropout-lab evaluate RUN_DIR``: test-time evaluation of a saved run, as a table and ``test_time.csv``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dropout_lab.cli.parser import parse
from dropout_lab.config.validate import check_T
from dropout_lab.errors import DropoutLabError
from dropout_lab.evaluation.checkpoint import split_tensors
from dropout_lab.evaluation.mc_evaluation import DEFAULT_T, evaluate_test_time
from dropout_lab.training.saved_run import load_run

CSV_NAME = "test_time.csv"


def evaluate_main(argv: Sequence[str]) -> int:
    """``dropout-lab evaluate ARGV``: parse, then :func:`evaluate`; returns the exit status."""
    return evaluate(parse(["evaluate", *argv]))


def evaluate(args: argparse.Namespace) -> int:
    """Evaluate RUN_DIR's ``model.pt`` on its test split; print the table and write ``RUN_DIR/test_time.csv``."""
    try:
        record, net, datamodule = load_run(args.run_dir, args.data_root)
        T = check_T(args.T if args.T is not None else record.config.get("test_time", {}).get("T", DEFAULT_T),
                    field="--T")
        seed = record.seed if args.seed is None else args.seed
        rows = evaluate_test_time(net, *split_tensors(datamodule.test_dataloader()), T=T, seed=seed,
                                  batch_size=datamodule.eval_batch_size)
    except (DropoutLabError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    table = pd.DataFrame(rows)
    table.to_csv(Path(args.run_dir) / CSV_NAME, index=False)
    shown = table[["mode", "T", "accuracy", "accuracy_std", "nll", "ece", "entropy", "seconds"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0
