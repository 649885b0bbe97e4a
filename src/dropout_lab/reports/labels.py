"""Readable names of configurations, derived from the stored config columns of the run table.

A grid over a config group (``experiment=chapter,no_dropout``) is named by what its levels change
in the stored configs, never by what the overlay files are known to contain.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: The hidden layers' dropout rates in the flattened config.
RATE_COLUMNS = ("model.dropout_1", "model.dropout_2")
#: Readable names of config keys used as factors.
KEY_NAMES = {"optim.weight_decay": "weight decay", "optim.lr": "learning rate", "optim.momentum": "momentum"}


def rates_text(rates: Sequence[float]) -> str:
    """'no dropout' when every rate is 0, else the rates per layer, e.g. 'dropout 0.5/0.5'."""
    if all(float(p) == 0 for p in rates):
        return "no dropout"
    return "dropout " + "/".join(f"{float(p):g}" for p in rates)


def _rate_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in RATE_COLUMNS if c in runs and runs[c].notna().all()]


def total_rate(runs: pd.DataFrame) -> pd.Series:
    """The sum of the hidden layers' dropout rates per row (NaN without the rate columns)."""
    columns = _rate_columns(runs)
    if not columns:
        return pd.Series(np.nan, index=runs.index)
    return runs[columns].astype(float).sum(axis=1)


def levels_by_rates(runs: pd.DataFrame, keys: Sequence[str]) -> dict[Hashable, str] | None:
    """Names of the configurations of ``keys`` by their dropout rates, when the rates tell them apart.

    Returns None when a key is itself a rate (its values already say it), the rates are not stored,
    or two configurations share their rates, or one configuration has several.
    """
    columns = _rate_columns(runs)
    if not columns or not keys or any(k in RATE_COLUMNS for k in keys) or runs.empty:
        return None
    rates: dict[Hashable, tuple[float, ...]] = {}
    for level, group in runs.groupby(list(keys)):
        distinct = group[columns].astype(float).drop_duplicates()
        if len(distinct) != 1:
            return None
        rates[level if len(keys) > 1 else level[0]] = tuple(distinct.iloc[0])
    if len(set(rates.values())) != len(rates):
        return None
    return {level: rates_text(r) for level, r in rates.items()}


def key_name(key: str) -> str:
    """A config key's readable name ('weight decay' for ``optim.weight_decay``), else the key."""
    return KEY_NAMES.get(key, key)


def value_text(name: str, value: Any) -> str:
    """'weight decay=0.0005', 'model=scratch'."""
    return f"{name}={value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else f"{name}={value}"
