"""The readiness report, computed at most once per ``HEALTH_REPORT_CACHE_SECONDS`` per process.

A report pings the workers and waits up to ``HEALTH_WORKER_PING_TIMEOUT`` for them: computed
per request, a few probes a second would keep every web worker busy pinging. So the report is
kept for a few seconds, and one refresh runs at a time: callers that arrive during a refresh
wait for it and share its result (also with a cache time of 0) instead of pinging again.

The cache lives in process memory on purpose: readiness must not depend on a cache server that
may be the very thing that is down. Each web process refreshes on its own, so N processes cost
at most N reports per period.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tasks.monitoring.health import HealthReport


@dataclass(frozen=True)
class _Entry:
    report: HealthReport
    started: float  # time.monotonic() when its computation began
    generation: int


class ReportCache:
    """One report, its age, and a lock so that one computation runs at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: _Entry | None = None

    def get(self, compute: Callable[[], HealthReport], *, max_age: float) -> HealthReport:
        """The cached report if younger than ``max_age`` seconds, else a new one (one at a time)."""
        entry = self._entry
        if entry is not None and time.monotonic() - entry.started < max_age:
            return entry.report
        seen = entry.generation if entry is not None else 0
        with self._lock:
            entry = self._entry
            # Someone refreshed while this caller waited for the lock: share that report.
            if entry is not None and (entry.generation != seen or time.monotonic() - entry.started < max_age):
                return entry.report
            started = time.monotonic()
            report = compute()
            self._entry = _Entry(report=report, started=started, generation=seen + 1)
            return report

    def clear(self) -> None:
        """Forget the report: the next caller computes a new one."""
        with self._lock:
            self._entry = None


readiness_reports = ReportCache()
