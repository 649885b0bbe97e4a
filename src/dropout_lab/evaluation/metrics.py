"""Metrics of predicted class probabilities: accuracy, NLL, expected calibration error, entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

ECE_BINS = 15


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows whose most probable class is the label."""
    return (probs.argmax(dim=1) == y).float().mean().item()


def negative_log_likelihood(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Mean of ``-log p(label)``; probabilities are clamped at the dtype's tiniest normal so it stays finite."""
    p = probs.gather(1, y[:, None]).squeeze(1)
    return -p.clamp_min(torch.finfo(p.dtype).tiny).log().mean().item()


def mean_entropy(probs: torch.Tensor) -> float:
    """Mean predictive entropy ``-sum_c p_c log p_c`` in nats (0 log 0 = 0)."""
    return -torch.special.xlogy(probs, probs).sum(dim=1).mean().item()


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    """ECE with ``n_bins`` equal-width confidence bins ``[i/n, (i+1)/n)``, the last one closed.

    ``sum_b |B_b|/N * |accuracy(B_b) - mean confidence(B_b)|``, confidence being the top probability.
    """
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == y).to(confidence.dtype)
    inner = torch.linspace(0, 1, n_bins + 1, dtype=confidence.dtype, device=confidence.device)[1:-1]
    # One-hot bin membership (a matmul, deterministic on every device, unlike a weighted bincount).
    member = F.one_hot(torch.bucketize(confidence, inner, right=True), n_bins).to(confidence.dtype)
    # |sum over a bin of (correct - confidence)| / N equals |B_b|/N * |acc(B_b) - conf(B_b)|.
    gap = member.T @ (correct - confidence)
    return (gap.abs().sum() / len(y)).item()


def probability_metrics(probs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy, NLL, ECE and mean entropy of one set of predicted probabilities."""
    return {"accuracy": accuracy(probs, y), "nll": negative_log_likelihood(probs, y),
            "ece": expected_calibration_error(probs, y), "entropy": mean_entropy(probs)}
