"""A runner's promise that a study's queue may grow: idle workers wait for it instead of exiting.

A sequential study (``runners/sequential_study.py``) queues its runs look by look. Its workers start
once and stay through the looks: while the study's queue is *held open*, a worker that finds the queue
empty waits for the next look's runs rather than exit. The promise is a lease stored with the study
(the Unix time until which it holds) that the runner renews while it lives, so workers on other hosts
see it too, and a runner killed without closing the queue lets its workers go within
:data:`QUEUE_LEASE_S` (plus any clock skew between the hosts).
"""

from __future__ import annotations

import time

import optuna

#: Study attribute: the Unix time until which the study's runner may queue more runs.
QUEUE_OPEN_ATTR = "queue_open_until"
#: How long one renewal of the lease holds.
QUEUE_LEASE_S = 120.0


class QueueLease:
    """The runner's side: hold a study's queue open, renew the hold while the runner lives, close it."""

    def __init__(self, study: optuna.Study, seconds: float = QUEUE_LEASE_S) -> None:
        self.study, self.seconds = study, seconds
        self.renewed = -float("inf")

    def hold(self) -> None:
        """Promise more runs for ``seconds`` from now."""
        self.study.set_user_attr(QUEUE_OPEN_ATTR, time.time() + self.seconds)
        self.renewed = time.monotonic()

    def renew(self) -> None:
        """Hold again once a quarter of the lease has passed (cheap to call every poll)."""
        if time.monotonic() - self.renewed >= self.seconds / 4:
            self.hold()

    def close(self) -> None:
        """No more runs will be queued: idle workers exit."""
        self.study.set_user_attr(QUEUE_OPEN_ATTR, 0.0)


def queue_open(study: optuna.Study) -> bool:
    """The workers' side: whether the study's runner still promises more runs."""
    return float(study.user_attrs.get(QUEUE_OPEN_ATTR, 0.0)) > time.time()
