"""Grid studies: cells (override values plus seed) and the Hydra overrides of each run."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from dropout_lab.config.study_spec import StudySpec

CellParams = dict[str, Any]


def grid_cells(spec: StudySpec) -> list[CellParams]:
    """Every combination of the grid's values with every seed, in a stable order."""
    if not spec.grid:
        return []
    keys = sorted(spec.grid)
    cells = []
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        for seed in spec.seed_list:
            cells.append({**dict(zip(keys, values)), "seed": seed})
    return cells


def cell_key(params: Mapping[str, Any]) -> str:
    """Canonical text of a cell, to compare cells across trials."""
    return json.dumps(dict(sorted(params.items())), sort_keys=True, default=str)


def override_value(value: Any) -> str:
    """A value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def run_overrides(spec: StudySpec, params: Mapping[str, Any]) -> list[str]:
    """Hydra overrides of one run: overlay, fixed overrides, epoch budget, then the cell's values."""
    out = [f"experiment={spec.experiment}"] if spec.experiment else []
    out += list(spec.overrides)
    out.append(f"trainer.max_epochs={spec.epochs}")
    out += [f"{key}={override_value(value)}" for key, value in params.items()]
    return out


def multirun_command(spec: StudySpec) -> str:
    """The plain Hydra multirun that runs the same grid (without the study store)."""
    parts = ["dropout-lab train --multirun"]
    if spec.experiment:
        parts.append(f"experiment={spec.experiment}")
    parts += list(spec.overrides) + [f"trainer.max_epochs={spec.epochs}"]
    parts += [f"{k}={','.join(override_value(v) for v in vs)}" for k, vs in sorted(spec.grid.items())]
    parts.append(f"seed={','.join(str(s) for s in spec.seed_list)}")
    return " ".join(parts)
