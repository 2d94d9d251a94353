"""Run several blocking calls at once and stop waiting for them at a deadline.

Monitoring reads (database, broker, worker pings) must answer in bounded time even when a
dependency hangs: a hung broker socket must not hang ``/health/ready`` or a Prometheus scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ALL_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from django.db import connections


class DeadlineExceeded(Exception):
    """The call had not returned when the deadline passed."""


@dataclass(frozen=True)
class CallOutcome:
    """What one call gave: its value, or the exception it raised (``DeadlineExceeded`` if late)."""

    value: Any = None
    error: BaseException | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def _timed(func: Callable[[], Any]) -> CallOutcome:
    started = time.monotonic()
    try:
        return CallOutcome(value=func(), seconds=time.monotonic() - started)
    except Exception as exc:
        return CallOutcome(error=exc, seconds=time.monotonic() - started)
    finally:
        # Each pool thread opened its own database connection and never sees Django's
        # request_finished signal, so close it here or it leaks.
        connections.close_all()


def call_concurrently(calls: Mapping[str, Callable[[], Any]], *, timeout: float) -> dict[str, CallOutcome]:
    """Run every call in its own thread; return each one's outcome within ``timeout`` seconds.

    Calls still running at the deadline are reported as ``DeadlineExceeded`` and left to finish
    on their own (their sockets have their own timeouts); the caller never waits for them.
    """
    if not calls:
        return {}
    executor = ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="monitoring")
    futures = {name: executor.submit(_timed, func) for name, func in calls.items()}
    try:
        wait(futures.values(), timeout=timeout, return_when=ALL_COMPLETED)
        late = CallOutcome(error=DeadlineExceeded(f"no answer within {timeout:g}s"), seconds=timeout)
        return {name: future.result() if future.done() else late for name, future in futures.items()}
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
