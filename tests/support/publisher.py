"""The process's publisher thread (``tasks.messaging.publisher``) in tests: wait for it, or
start again with a new one so no state (a pause after a failed send) leaks between tests."""

from __future__ import annotations

from tasks.messaging import publisher


def publisher_reset(timeout: float = 10.0) -> None:
    """Let the current publisher send what it holds, end its thread, and forget it."""
    current = publisher._publisher
    if current is not None:
        current[1].close(timeout)
    publisher._publisher = None
