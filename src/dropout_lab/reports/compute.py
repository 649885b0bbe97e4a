"""The training compute of a study's stored runs, for its report, its ``answer.json`` and the index: runs by state,
epochs trained, run wall time and CPU time (each run's wall time x its torch threads)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

#: Torch threads counted for a run whose record has none (``dropout-lab train`` without ``threads=``): a lower bound,
#: since torch then uses every core.
ASSUMED_THREADS = 1
#: The counts of :func:`compute_totals`, summed over studies by :func:`sum_totals`.
COUNTS = ("runs", "completed", "pruned", "failed", "epochs", "wall_h", "cpu_h", "threads_unrecorded")


def compute_totals(runs: pd.DataFrame) -> dict[str, Any]:
    """Runs (all recorded, and those completed, pruned and failed), epochs trained, run wall hours and CPU-hours.

    A run's ``wall_time_s`` is its share of its worker's wall time (a population member: its share of the
    population's), so their sum is the workers' time; CPU-hours weigh each run by its recorded ``threads`` (its
    worker's torch threads: ``study run --jobs N`` gives each worker cores / N), :data:`ASSUMED_THREADS` where the
    record has none (counted in ``threads_unrecorded``). Attempts lost to a dead worker are not in the table and not
    counted.
    """
    wall = runs["wall_time_s"].astype(float).fillna(0.0) if "wall_time_s" in runs else pd.Series(0.0, runs.index)
    threads = runs["threads"].astype(float) if "threads" in runs else pd.Series(float("nan"), runs.index)
    unrecorded = threads.isna() & (wall > 0)
    states = runs["state"].value_counts() if "state" in runs else pd.Series(dtype=int)
    epochs = int(runs["epochs_run"].sum()) if "epochs_run" in runs else 0
    return {"runs": len(runs), "completed": int(states.get("COMPLETE", 0)), "pruned": int(states.get("PRUNED", 0)),
            "failed": int(states.get("FAIL", 0)), "epochs": epochs, "wall_h": float(wall.sum()) / 3600,
            "cpu_h": float((wall * threads.fillna(ASSUMED_THREADS)).sum()) / 3600,
            "threads_unrecorded": int(unrecorded.sum())}


def sum_totals(totals: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of several :func:`compute_totals` results."""
    items = list(totals)
    return {key: sum(t[key] for t in items) for key in COUNTS}


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def runs_text(totals: Mapping[str, Any]) -> str:
    """'80 runs (78 completed, 2 pruned, 0 failed), 4,000 epochs'."""
    return (f"{_count(totals['runs'], 'run')} ({totals['completed']:,} completed, {totals['pruned']:,} pruned, "
            f"{totals['failed']:,} failed), {_count(totals['epochs'], 'epoch')}")


def compute_text(totals: Mapping[str, Any]) -> str:
    """'1.20 CPU-hours (0.60 h of run wall time, each run's weighted by its torch threads)', with the thread
    assumption where some runs have no recorded thread count."""
    text = (f"{totals['cpu_h']:.2f} CPU-hours ({totals['wall_h']:.2f} h of run wall time, each run's weighted by its "
            "torch threads)")
    if unrecorded := totals["threads_unrecorded"]:
        text += (f"; {_count(unrecorded, 'run')} without a recorded thread count {'is' if unrecorded == 1 else 'are'} "
                 f"counted at {ASSUMED_THREADS} thread (a lower bound: torch then uses every core)")
    return text
