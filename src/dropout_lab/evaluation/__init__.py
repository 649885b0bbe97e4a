"""Test-time evaluation of trained networks: deterministic, single noisy passes and Monte-Carlo averages."""

from dropout_lab.evaluation.mc_evaluation import DEFAULT_T, evaluate_test_time, mc_evaluate
from dropout_lab.evaluation.metrics import expected_calibration_error, mean_entropy, negative_log_likelihood

__all__ = ["DEFAULT_T", "evaluate_test_time", "expected_calibration_error", "mc_evaluate", "mean_entropy",
           "negative_log_likelihood"]
