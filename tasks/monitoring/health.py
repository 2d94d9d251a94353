"""Health checks: a registry filled from ``TasksConfig.ready()`` and a runner with a deadline.

A check is a function that returns a ``CheckOutcome`` (or raises: that is a failure). Checks run
concurrently, and ``run_checks`` returns within ``HEALTH_CHECK_TIMEOUT`` seconds whatever hangs;
a check that has not answered by then fails with "no answer". A failing *required* check makes
the platform not ready (HTTP 503); a failing optional one only makes it "degraded".

Adding a check is one call: ``register_check("name", function, required=True)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection

from tasks.monitoring import selectors
from tasks.monitoring.deadline import call_concurrently
from tasks.monitoring.queue_stats import queue_stats
from tasks.monitoring.task_metrics import last_task_started_by_queue
from tasks.scheduling.lease import beat_lateness, beat_status
from tasks.streams.stats import stream_stats

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class CheckOutcome:
    """What a check found: healthy or not, one line for a person, and numbers for machines."""

    healthy: bool
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RegisteredCheck:
    name: str
    function: Callable[[], CheckOutcome]
    required: bool


@dataclass(frozen=True)
class CheckResult:
    name: str
    required: bool
    healthy: bool
    detail: str
    latency_ms: float
    data: dict[str, Any]

    @property
    def status(self) -> str:
        if self.healthy:
            return OK
        return FAIL if self.required else WARN

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "required": self.required,
            "latency_ms": round(self.latency_ms, 1),
            "detail": self.detail,
            **self.data,
        }


@dataclass(frozen=True)
class HealthReport:
    results: list[CheckResult]

    @property
    def ready(self) -> bool:
        """True when every required check passed."""
        return all(result.healthy for result in self.results if result.required)

    @property
    def status(self) -> str:
        if not self.ready:
            return FAIL
        return OK if all(result.healthy for result in self.results) else "degraded"

    @property
    def failing(self) -> list[CheckResult]:
        return [result for result in self.results if not result.healthy]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "failing": [result.name for result in self.failing],
            "reason": "; ".join(f"{result.name}: {result.detail}" for result in self.failing),
            "checks": {result.name: result.as_dict() for result in self.results},
        }


_registry: dict[str, RegisteredCheck] = {}


def register_check(name: str, function: Callable[[], CheckOutcome], *, required: bool = True) -> None:
    """Add (or replace, by name) a check. Called from ``AppConfig.ready()``."""
    _registry[name] = RegisteredCheck(name=name, function=function, required=required)


def unregister_check(name: str) -> None:
    _registry.pop(name, None)


def registered_checks() -> list[RegisteredCheck]:
    """The checks in registration order."""
    return list(_registry.values())


def run_checks(*, timeout: float | None = None) -> HealthReport:
    """Run every registered check concurrently; never take much longer than ``timeout`` seconds."""
    timeout = settings.HEALTH_CHECK_TIMEOUT if timeout is None else timeout
    checks = registered_checks()
    outcomes = call_concurrently({check.name: check.function for check in checks}, timeout=timeout)
    results = []
    for check in checks:
        outcome = outcomes[check.name]
        if outcome.ok and isinstance(outcome.value, CheckOutcome):
            found = outcome.value
        elif outcome.ok:
            found = CheckOutcome(False, f"check returned {type(outcome.value).__name__}, not a CheckOutcome")
        else:
            found = CheckOutcome(False, f"{type(outcome.error).__name__}: {outcome.error}")
        results.append(
            CheckResult(
                name=check.name,
                required=check.required,
                healthy=found.healthy,
                detail=found.detail,
                latency_ms=outcome.seconds * 1000,
                data=found.data,
            )
        )
    return HealthReport(results=results)


# --- The platform's checks -------------------------------------------------------------


def check_database() -> CheckOutcome:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return CheckOutcome(True, f"{connection.vendor} answers")


def check_broker() -> CheckOutcome:
    with current_app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=0)  # one attempt: a monitoring read must not wait out retries
        if conn.transport.driver_type == "redis":
            conn.default_channel.client.ping()
        return CheckOutcome(True, f"{conn.as_uri()} answers")


def check_workers() -> CheckOutcome:
    timeout = settings.HEALTH_WORKER_PING_TIMEOUT
    replies = current_app.control.ping(timeout=timeout)
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        return CheckOutcome(False, f"no worker answered ping within {timeout:g}s", {"workers": []})
    return CheckOutcome(True, f"{len(workers)} worker(s) answered ping", {"workers": workers})


def check_beat() -> CheckOutcome:
    beat = beat_status()
    late = beat_lateness(beat, max_age=settings.HEALTH_BEAT_MAX_AGE)
    if beat is None or beat.age_seconds is None:
        return CheckOutcome(False, late, {"age_seconds": None})
    data = {"age_seconds": round(beat.age_seconds, 1), "leader": beat.leader}
    if late:
        return CheckOutcome(False, late, data)
    return CheckOutcome(True, f"last tick {beat.age_seconds:.0f}s ago by {beat.leader}", data)


def check_outbox() -> CheckOutcome:
    limit = settings.HEALTH_OUTBOX_MAX_AGE
    backlog = selectors.outbox_backlog()
    age = backlog.oldest_age_seconds
    data = {"unsent": backlog.unsent, "oldest_age_seconds": None if age is None else round(age, 1)}
    if age is not None and age > limit:
        return CheckOutcome(False, f"{backlog.unsent} unsent, oldest {age:.0f}s old (limit {limit}s)", data)
    return CheckOutcome(True, f"{backlog.unsent} unsent", data)


def check_dead_letters() -> CheckOutcome:
    limit = settings.HEALTH_DEAD_LETTERS_MAX
    count = selectors.dead_letter_count()
    if count > limit:
        return CheckOutcome(False, f"{count} dead letter(s) waiting (limit {limit})", {"count": count})
    return CheckOutcome(True, f"{count} dead letter(s)", {"count": count})


def check_queues() -> CheckOutcome:
    limit = settings.HEALTH_QUEUE_MAX_AGE
    stats = queue_stats()
    data = {"queues": {s.name: {"depth": s.depth, "oldest_age_seconds": _round(s.oldest_age_seconds)} for s in stats}}
    late = [s for s in stats if s.oldest_age_seconds is not None and s.oldest_age_seconds > limit]
    if late:
        names = ", ".join(f"{s.name} ({s.oldest_age_seconds:.0f}s)" for s in late)
        return CheckOutcome(False, f"oldest message older than {limit}s in {names}", data)
    return CheckOutcome(True, ", ".join(f"{s.name}={s.depth}" for s in stats), data)


def check_queue_consumption() -> CheckOutcome:
    """Messages waiting and no task started from their queue for ``HEALTH_QUEUE_STALLED_AFTER`` s.

    The known Celery failure where workers stay up, answer pings and stop consuming (after a
    broker reconnect): the queue grows and nothing starts. Last starts come from the worker
    metric files this web process can read (``PROMETHEUS_METRICS_DIR``); a queue no worker here
    has ever started from is not judged. On Redis the oldest message must also have waited
    that long, so a first message after a quiet hour is not taken for a stall.
    """
    limit = settings.HEALTH_QUEUE_STALLED_AFTER
    last_started = last_task_started_by_queue(settings.PROMETHEUS_METRICS_DIR)
    now = time.time()
    data, stalled = {}, []
    for stats in queue_stats():
        started = last_started.get(stats.name)
        idle = None if started is None else max(0.0, now - started)
        data[stats.name] = {"depth": stats.depth, "seconds_since_last_start": _round(idle)}
        waited = stats.oldest_age_seconds
        if stats.depth and idle is not None and idle > limit and (waited is None or waited > limit):
            stalled.append(f"{stats.name} ({stats.depth} waiting, last start {idle:.0f}s ago)")
    if stalled:
        return CheckOutcome(False, f"nothing started for over {limit}s from {', '.join(stalled)}", {"queues": data})
    return CheckOutcome(True, "every queue with messages is consumed", {"queues": data})


def check_stream_groups() -> CheckOutcome:
    """Every consumer group of the Redis streams makes progress (``tasks.streams.stats``)."""
    streams = stream_stats()
    data = {"streams": [stream.as_dict() for stream in streams]}
    stuck = [
        f"{stream.name}/{group.name} ({group.lag or 0} behind, {group.pending} pending, "
        f"nothing acknowledged for {group.seconds_without_progress:.0f}s)"
        for stream in streams
        for group in stream.groups
        if group.stuck
    ]
    if stuck:
        return CheckOutcome(False, "stuck consumer groups: " + ", ".join(stuck), data)
    groups = sum(len(stream.groups) for stream in streams)
    return CheckOutcome(True, f"{len(streams)} stream(s), {groups} group(s) making progress", data)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def register_platform_checks() -> None:
    """The platform's own checks; required ones decide readiness."""
    register_check("database", check_database)
    register_check("broker", check_broker)
    register_check("workers", check_workers)
    register_check("beat", check_beat)
    register_check("outbox", check_outbox)
    register_check("dead_letters", check_dead_letters, required=False)
    register_check("queues", check_queues, required=False)
    register_check("queue_consumption", check_queue_consumption, required=False)
    register_check("streams", check_stream_groups, required=False)
