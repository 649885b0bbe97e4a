"""The chapter's dropout, written from scratch."""

from __future__ import annotations

import math

import torch

from dropout_lab.errors import InvalidValueError


def check_rate(p: float, field: str = "p") -> float:
    """Return ``p`` as a float if it is a probability in [0, 1], else raise ``InvalidValueError``."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise InvalidValueError(field, p, "a number in [0, 1]") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InvalidValueError(field, p, "a number in [0, 1]")
    return value


def dropout_layer(X: torch.Tensor, p: float) -> torch.Tensor:
    """Zero each element of ``X`` with probability ``p`` and scale survivors by 1/(1-p).

    ``p = 0`` returns ``X`` unchanged and ``p = 1`` returns zeros, so the expectation
    of every element is preserved for ``p < 1``.
    """
    p = check_rate(p)
    if p == 0.0:
        return X
    if p == 1.0:
        return torch.zeros_like(X)
    mask = (torch.rand_like(X) > p).to(X.dtype)
    return mask * X / (1.0 - p)
