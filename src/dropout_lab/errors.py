"""Exceptions that dropout-lab turns into one clear message instead of a traceback."""

from __future__ import annotations

from typing import Any


class DropoutLabError(Exception):
    """Base class: anything the user can fix by changing input, data or storage."""


class InvalidValueError(DropoutLabError, ValueError):
    """A configuration value outside its allowed range or set."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is invalid: allowed {allowed}")


class DataNotFoundError(DropoutLabError, FileNotFoundError):
    """Fashion-MNIST could not be found, verified or downloaded."""


class RunDivergedError(DropoutLabError, ArithmeticError):
    """Training produced a non-finite loss."""


class RunFailedError(DropoutLabError):
    """A run ended failed (diverged, or an error while it trained); the message is its record's reason."""


class StorageError(DropoutLabError):
    """A study storage URL that is malformed, unsupported or unreachable."""


class StudySpecError(DropoutLabError):
    """A study definition file that is missing, or has a missing field, a wrong type or an empty grid."""


def interrupt_behind(exc: BaseException) -> BaseException | None:
    """The Ctrl-C (``KeyboardInterrupt``) or ``SystemExit`` that ``exc`` stands for, if any.

    A library's clean-up code that fails while a Ctrl-C unwinds it (seen in OmegaConf while Hydra composes a
    config) raises an ordinary exception that hides the interrupt; it is still in the exception's chain.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (KeyboardInterrupt, SystemExit)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
