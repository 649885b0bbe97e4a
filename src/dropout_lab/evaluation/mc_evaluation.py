"""Test-time evaluation with the noise off, on for single passes, and averaged over T passes (MC dropout).

Exercise 4 of the chapter: what happens if dropout is applied at test time? The noisy passes put
the network in train mode under ``torch.no_grad`` (these networks have no BatchNorm, so train
mode changes only the noise) and draw from a forked, seeded RNG, so results are reproducible and
the caller's random state is left as it was.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dropout_lab.config.validate import check_T
from dropout_lab.evaluation.metrics import probability_metrics

DEFAULT_T = (1, 2, 5, 10, 20, 50, 100)
METRICS = ("accuracy", "nll", "ece", "entropy")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _probabilities(net: nn.Module, X: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax outputs over ``X`` in batches, in the network's current mode."""
    return torch.cat([F.softmax(net(X[i:i + batch_size]), dim=1) for i in range(0, len(X), batch_size)])


def _passes(net: nn.Module, X: torch.Tensor, n: int, noise: bool, seed: int,
            batch_size: int) -> Iterator[tuple[torch.Tensor, float]]:
    """``n`` passes over ``X`` with the noise on or off: yields (probabilities, seconds) per pass."""
    device = X.device
    was_training = net.training
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            net.train(noise)
            for _ in range(n):
                start = time.perf_counter()
                probs = _probabilities(net, X, batch_size)
                _sync(device)
                yield probs, time.perf_counter() - start
    finally:
        net.train(was_training)


def _row(mode: str, T: int, metrics: dict[str, float], seconds: float,
         std: dict[str, float] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"mode": mode, "T": T, **metrics, "seconds": seconds}
    for name in METRICS:
        row[f"{name}_std"] = None if std is None else std[name]
    return row


def _stochastic(net: nn.Module, X: torch.Tensor, y: torch.Tensor, T: list[int], noise: bool, seed: int,
                batch_size: int) -> tuple[list[dict[str, float]], list[float], list[dict[str, Any]]]:
    """One sweep of ``max(T)`` passes: per-pass metrics and seconds, and MC rows for every prefix length in ``T``."""
    singles: list[dict[str, float]] = []
    seconds: list[float] = []
    mc: list[dict[str, Any]] = []
    total = None
    for t, (probs, secs) in enumerate(_passes(net, X, max(T), noise, seed, batch_size), start=1):
        singles.append(probability_metrics(probs, y))
        seconds.append(secs)
        total = probs if total is None else total + probs
        if t in T:
            mc.append(_row("mc", t, probability_metrics(total / t, y), sum(seconds)))
    return singles, seconds, mc


def _on_device(net: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(net.parameters()).device
    return X.to(device), y.to(device)


def mc_evaluate(net: nn.Module, X: torch.Tensor, y: torch.Tensor, T: Sequence[int] = DEFAULT_T,
                noise: bool = True, seed: int = 0, batch_size: int = 2000) -> list[dict[str, Any]]:
    """Monte-Carlo rows (``mode="mc"``): softmax averaged over the first T of ``max(T)`` passes.

    ``noise=False`` averages deterministic passes, so every T gives the deterministic result.
    ``seconds`` is the time of the T passes.
    """
    T = check_T(T)
    X, y = _on_device(net, X, y)
    return _stochastic(net, X, y, T, noise, seed, batch_size)[2]


def evaluate_test_time(net: nn.Module, X: torch.Tensor, y: torch.Tensor, T: Sequence[int] = DEFAULT_T,
                       seed: int = 0, batch_size: int = 2000) -> list[dict[str, Any]]:
    """Tidy rows ``{"mode", "T", "accuracy", "nll", "ece", "entropy", "seconds", "<metric>_std"}``.

    * ``deterministic`` (T=1): noise off (``net.eval()``).
    * ``single`` (T=max(T)): mean and standard deviation of the metrics of ``max(T)`` single
      noisy passes; ``seconds`` is the mean time of one pass.
    * ``mc``: one row per T, the softmax averaged over the first T of those same passes.

    The ``*_std`` keys are filled for ``single`` only.
    """
    T = check_T(T)
    X, y = _on_device(net, X, y)
    ((probs, secs),) = _passes(net, X, 1, noise=False, seed=seed, batch_size=batch_size)
    rows = [_row("deterministic", 1, probability_metrics(probs, y), secs)]
    singles, seconds, mc = _stochastic(net, X, y, T, noise=True, seed=seed, batch_size=batch_size)
    mean = {m: statistics.fmean(s[m] for s in singles) for m in METRICS}
    std = {m: statistics.stdev([s[m] for s in singles]) if len(singles) > 1 else 0.0 for m in METRICS}
    rows.append(_row("single", len(singles), mean, statistics.fmean(seconds), std))
    return rows + mc
