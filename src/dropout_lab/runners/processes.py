"""Local worker processes that die with their parent and report how they ended (Linux: ``PR_SET_PDEATHSIG``).

``study run --jobs N`` starts each local worker as its own ``dropout-lab worker`` process. A
worker killed by the OOM killer takes only its own run with it (its heartbeat stops and another
worker re-queues the run); the runner killed by anything takes its workers with it, because the
kernel sends each of them SIGKILL when their parent dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
#: Seconds ``stop`` lets interrupted workers re-queue their runs before it kills them.
STOP_GRACE_S = 60.0


def _die_with(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn``: SIGKILL this child when ``parent_pid`` dies (Linux), also if it died already."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None

    def _setup() -> None:
        if prctl is not None and prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")  # Popen raises it in the parent
        if os.getppid() != parent_pid:  # the parent died between fork and prctl: follow it
            os._exit(70)

    return _setup


@dataclass
class WorkerProcess:
    """One local worker: its index, command and process."""

    index: int
    command: list[str]
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def describe_exit(self) -> str:
        """``ok``, ``exit status N`` or ``killed by SIGNAME``."""
        code = self.process.returncode
        if code is None:
            return "running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return "ok" if code == 0 else f"exit status {code}"


def start_workers(commands: Sequence[list[str]], log: IO) -> list[WorkerProcess]:
    """Start one process per command, each in its own process group, writing to ``log``.

    Ctrl-C reaches only the runner, which passes it on once to each worker (``stop``); a SIGKILL
    of the runner reaches each worker through ``PR_SET_PDEATHSIG``. That signal follows the thread
    that starts them: call this from the main thread (or one that lives as long as they should).
    """
    workers = []
    for index, command in enumerate(commands):
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   process_group=0, preexec_fn=_die_with(os.getpid()))
        workers.append(WorkerProcess(index, command, process))
    return workers


def stop(workers: Sequence[WorkerProcess], grace_s: float = STOP_GRACE_S) -> None:
    """Interrupt live workers (each re-queues its run), wait for them, and kill those that do not end."""
    for worker in workers:
        if worker.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for worker in workers:
        try:
            worker.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.process.wait()
