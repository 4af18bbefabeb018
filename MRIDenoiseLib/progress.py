"""Progress reporting and cooperative cancellation shared by every long-running step."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import Cancelled

ProgressCallback = Callable[[float, str], None]
"""Called with the fraction done in [0, 1] and a short message."""


def no_progress(fraction: float, message: str) -> None:
    """A progress callback that ignores every report."""


class CancelToken:
    """Set from any thread (a Cancel button, a signal handler); checked by the worker."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user; nothing was written")


def scaled(callback: ProgressCallback, start: float, stop: float) -> ProgressCallback:
    """A callback mapping a sub-task's [0, 1] onto [start, stop] of its parent's progress."""

    def report(fraction: float, message: str) -> None:
        callback(start + (stop - start) * min(max(fraction, 0.0), 1.0), message)

    return report
