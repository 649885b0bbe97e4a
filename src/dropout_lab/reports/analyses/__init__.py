"""One analysis per kind of question; ``ANALYSES`` maps a study's ``analysis`` field to it."""

from __future__ import annotations

from collections.abc import Callable

from dropout_lab.reports.analyses import (
    baseline,
    compare,
    dropconnect,
    epochs,
    factorial,
    noise_final,
    rates_grid,
    test_time,
    tuning,
    variance,
)
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.report_parts import Report

ANALYSES: dict[str, Callable[[StudyData], Report]] = {
    "variance": variance.analyze,
    "test_time": test_time.analyze,
    "dropconnect": dropconnect.analyze,
    "compare": compare.analyze,
    "baseline": baseline.analyze,
    "tuning": tuning.analyze,
    "noise_final": noise_final.analyze,
    "rates_grid": rates_grid.analyze,
    "epochs": epochs.analyze,
    "factorial": factorial.analyze,
}
