"""Reads behind health checks, metrics and the status page.

Every query on the task results table is bounded by a ``date_done`` window (indexed), so the
cost follows the recent traffic, never the size of the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Max, Q
from django.db.models.functions import TruncMinute
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_results.models import TaskResult

from tasks.messages import Message
from tasks.models import DeadLetter, Delivery, Outbox
from tasks.scheduling.next_run import NextRunUnknown, periodic_task_next_run
from tasks.scheduling.punctuality import Punctuality, schedules_punctuality


@dataclass(frozen=True)
class OutboxBacklog:
    unsent: int
    oldest_age_seconds: float | None


def _age(moment: datetime | None, now: datetime) -> float | None:
    return max(0.0, (now - moment).total_seconds()) if moment else None


def outbox_backlog(*, now: datetime | None = None) -> OutboxBacklog:
    """Unsent outbox rows and the age of the oldest (both served by the partial index on unsent rows)."""
    now = now or timezone.now()
    unsent = Outbox.objects.filter(sent_at__isnull=True)
    oldest = unsent.order_by("created_at").values_list("created_at", flat=True).first()
    return OutboxBacklog(unsent=unsent.count(), oldest_age_seconds=_age(oldest, now))


def dead_letter_count() -> int:
    """Dead letters still waiting for an operator (status ``dead``)."""
    return DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).count()


def waiting_by_handler() -> dict[str, int]:
    """Deliveries waiting for their rate or concurrency limit, by handler (an index's rows only)."""
    rows = Delivery.objects.filter(status=Delivery.Status.WAITING).values_list("handler").annotate(n=Count("pk"))
    return dict(rows.order_by())


def newest_dead_letters(limit: int = 10) -> list[DeadLetter]:
    return list(DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).order_by("-last_failed_at")[:limit])


def dead_letter_subject(row: DeadLetter) -> str:
    """What failed, for operators: the message's own description for a failed delivery (a Django
    task's name, say), the task name otherwise; the payload is read as any message, so an
    unreadable one is shown by its task name."""
    if row.payload and row.message_type:
        try:
            return Message.from_json(row.payload).describe()
        except Exception:  # a payload this code cannot read is still listed
            return row.task_name
    return row.task_name


def failures_by_task(*, since: datetime, limit: int = 20) -> list[dict]:
    """Failed task results since ``since``, counted by task name, most failures first."""
    return list(
        TaskResult.objects.filter(date_done__gte=since, status="FAILURE")
        .values("task_name")
        .annotate(failures=Count("id"), last_failed_at=Max("date_done"))
        .order_by("-failures", "task_name")[:limit]
    )


def tasks_per_minute(*, since: datetime, now: datetime | None = None) -> list[dict]:
    """One entry per minute from ``since`` to now: finished tasks and failures in that minute."""
    now = now or timezone.now()
    rows = (
        TaskResult.objects.filter(date_done__gte=since)
        .annotate(minute=TruncMinute("date_done"))
        .values("minute")
        .annotate(total=Count("id"), failed=Count("id", filter=Q(status="FAILURE")))
        .order_by("minute")
    )
    counts = {row["minute"]: row for row in rows}
    minute = since.replace(second=0, microsecond=0)
    series = []
    while minute <= now:
        row = counts.get(minute, {})
        series.append({"minute": minute, "total": row.get("total", 0), "failed": row.get("failed", 0)})
        minute += timedelta(minutes=1)
    return series


@dataclass(frozen=True)
class ScheduleRow:
    task: PeriodicTask
    next_run_at: datetime | None
    last_status: str
    last_done_at: datetime | None
    punctuality: Punctuality | None = None


def schedules_overview(*, since: datetime, now: datetime | None = None, limit: int = 100) -> list[ScheduleRow]:
    """Periodic tasks with their next run (estimated as Beat does) and their latest result since ``since``."""
    now = now or timezone.now()
    tasks = list(
        PeriodicTask.objects.select_related("interval", "crontab", "solar", "clocked").order_by("name")[:limit]
    )
    names = [task.name for task in tasks]
    latest = dict(
        TaskResult.objects.filter(date_done__gte=since, periodic_task_name__in=names)
        .values("periodic_task_name")
        .annotate(last=Max("date_done"))
        .values_list("periodic_task_name", "last")
    )
    statuses: dict[str, str] = {}
    if latest:
        condition = Q()
        for name, done in latest.items():
            condition |= Q(periodic_task_name=name, date_done=done)
        statuses = dict(
            TaskResult.objects.filter(condition, date_done__gte=since).values_list("periodic_task_name", "status")
        )
    return [
        ScheduleRow(
            task=task,
            next_run_at=_next_run_or_none(task, now),
            last_status=statuses.get(task.name, ""),
            last_done_at=latest.get(task.name),
            punctuality=punctuality,
        )
        for task, punctuality in zip(tasks, schedules_punctuality(tasks, now=now), strict=True)
    ]


def _next_run_or_none(task: PeriodicTask, now: datetime) -> datetime | None:
    try:
        return periodic_task_next_run(task, now=now)
    except NextRunUnknown:
        return None
