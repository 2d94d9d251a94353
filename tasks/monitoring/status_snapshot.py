"""Everything the platform status page shows, gathered in one go with a deadline on the broker.

Broker reads (worker inspection, queue stats) run concurrently and are cut off after
``STATUS_BROKER_TIMEOUT`` seconds; database reads use indexed, time-windowed queries only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.utils import timezone

from tasks.monitoring import selectors
from tasks.monitoring.deadline import CallOutcome, call_concurrently
from tasks.monitoring.queue_stats import QueueStats, queue_stats
from tasks.scheduling.lease import BeatStatus, beat_status
from tasks.streams.queue_stats import ConsumerQueueStats, consumer_queue_stats
from tasks.streams.stats import StreamStats, stream_stats


@dataclass(frozen=True)
class WorkerRow:
    name: str
    active: int | None
    processed: int
    concurrency: Any


@dataclass
class PlatformSnapshot:
    taken_at: datetime
    workers: list[WorkerRow] = field(default_factory=list)
    workers_error: str = ""
    queues: list[QueueStats] = field(default_factory=list)
    queues_error: str = ""
    streams: list[StreamStats] = field(default_factory=list)
    streams_error: str = ""
    stream_queues: list[ConsumerQueueStats] = field(default_factory=list)
    stream_queues_error: str = ""
    beat: BeatStatus | None = None
    outbox: selectors.OutboxBacklog | None = None
    dead_letter_count: int = 0
    dead_letters: list = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    schedules: list[selectors.ScheduleRow] = field(default_factory=list)
    per_minute: list[dict] = field(default_factory=list)


def _inspect_stats() -> dict:
    return current_app.control.inspect(timeout=settings.STATUS_INSPECT_TIMEOUT).stats() or {}


def _inspect_active() -> dict:
    return current_app.control.inspect(timeout=settings.STATUS_INSPECT_TIMEOUT).active() or {}


def _error(outcome: CallOutcome) -> str:
    return f"{type(outcome.error).__name__}: {outcome.error}"


def _workers(stats: CallOutcome, active: CallOutcome) -> list[WorkerRow]:
    running = active.value if active.ok else {}
    return [
        WorkerRow(
            name=name,
            active=len(running[name]) if name in running else None,
            processed=sum((info.get("total") or {}).values()),
            concurrency=(info.get("pool") or {}).get("max-concurrency"),
        )
        for name, info in sorted(stats.value.items())
    ]


def take_snapshot(*, now: datetime | None = None) -> PlatformSnapshot:
    """The platform's state now: workers, queues, Beat, outbox, dead letters, failures, schedules."""
    now = now or timezone.now()
    broker = call_concurrently(
        {
            "stats": _inspect_stats,
            "active": _inspect_active,
            "queues": queue_stats,
            "streams": stream_stats,
            "stream_queues": consumer_queue_stats,
        },
        timeout=settings.STATUS_BROKER_TIMEOUT,
    )
    snapshot = PlatformSnapshot(taken_at=now)
    if broker["stats"].ok:
        snapshot.workers = _workers(broker["stats"], broker["active"])
    else:
        snapshot.workers_error = _error(broker["stats"])
    if broker["queues"].ok:
        snapshot.queues = broker["queues"].value
    else:
        snapshot.queues_error = _error(broker["queues"])
    if broker["streams"].ok:
        snapshot.streams = broker["streams"].value
    else:
        snapshot.streams_error = _error(broker["streams"])
    if broker["stream_queues"].ok:
        snapshot.stream_queues = broker["stream_queues"].value
    else:
        snapshot.stream_queues_error = _error(broker["stream_queues"])
    snapshot.beat = beat_status(now=now)
    snapshot.outbox = selectors.outbox_backlog(now=now)
    snapshot.dead_letter_count = selectors.dead_letter_count()
    snapshot.dead_letters = selectors.newest_dead_letters()
    day_ago = now - timedelta(hours=24)
    snapshot.failures = selectors.failures_by_task(since=day_ago)
    snapshot.schedules = selectors.schedules_overview(since=day_ago, now=now)
    snapshot.per_minute = selectors.tasks_per_minute(since=now - timedelta(minutes=59), now=now)
    return snapshot
