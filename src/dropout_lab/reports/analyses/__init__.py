"""One analysis per kind of question; ``ANALYSES`` maps a study's ``analysis`` field to it."""

from __future__ import annotations

from collections.abc import Callable

from dropout_lab.reports.analyses import baseline, compare, noise_final, tuning
from dropout_lab.reports.analyses import epochs, factorial, rates_grid
from dropout_lab.reports.analyses import dropconnect, test_time, variance
from dropout_lab.reports.inputs import StudyData
from dropout_lab.reports.model import Report

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
