"""Waiting with a deadline: tests poll for a state instead of sleeping for a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The awaited state did not arrive before the deadline."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str = "condition",
) -> T:
    """Calls `predicate` until it returns something truthy and returns that value.

    Exceptions raised by the predicate count as "not yet" until the deadline, then the last one is
    chained to the timeout so the failure says what was last seen.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    last_value: T | None = None
    while True:
        try:
            last_value = predicate()
            if last_value:
                return last_value
        except Exception as error:
            last_error = error
        if time.monotonic() >= deadline:
            detail = f"; last value: {last_value!r}" if last_error is None else ""
            raise WaitTimeout(
                f"timed out after {timeout:.0f}s waiting for {message}{detail}"
            ) from (last_error)
        time.sleep(interval)
