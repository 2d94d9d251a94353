"""Wait for a condition that another process makes true (a worker, a relay, Beat)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], *, timeout: float = 30, interval: float = 0.2, message: str | Callable[[], str] = ""
) -> T:
    """Call ``condition`` until it returns something truthy; return that, or fail after ``timeout``.

    ``message`` may be a callable: it is called on failure, so a process log it reads is the
    log at the time of the failure, not at the start of the wait.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"not true within {timeout}s: {text or condition}")
        time.sleep(interval)
