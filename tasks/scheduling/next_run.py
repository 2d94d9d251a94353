"""When a schedule runs next: one answer for Beat, the schedule admin and the status page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import schedules as celery_schedules
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask


class NextRunUnknown(Exception):
    """Celery cannot evaluate this schedule (a row edited half-way, a custom schedule type)."""


def schedule_due_at(schedule: Any, last_run_at: datetime) -> datetime:
    """When ``schedule`` is next due after a run at ``last_run_at`` (in the past if overdue)."""
    if isinstance(schedule, celery_schedules.crontab):
        start, ends_in, _now = schedule.remaining_delta(last_run_at)
        return start + ends_in
    if isinstance(schedule, celery_schedules.schedule):
        return last_run_at + schedule.run_every
    return timezone.now() + schedule.remaining_estimate(last_run_at)


def run_expires(schedule: Any, due_at: datetime, *, own: Any = None) -> Any:
    """The expiry of the run due at ``due_at``: the schedule's own (``own``) if it sets one, else
    the seconds from this run's due time to the next's, counted by Celery from the publish
    (``SCHEDULE_RUNS_EXPIRE_AT_NEXT_DUE``), else none (None).

    A run that waited in the queue until the next was due would run back to back with it; it
    becomes a dead letter "expired" instead (``tasks.reliability.expiry``). Counted from the
    publish, not the due time: a run the relay sends after a broker outage stands for the due
    times it covered (the misfire policy's business) and still gets its period to start.
    """
    if own is not None or not settings.SCHEDULE_RUNS_EXPIRE_AT_NEXT_DUE:
        return own
    try:
        return max(1.0, (schedule_due_at(schedule, due_at) - due_at).total_seconds())
    except Exception:  # a schedule Celery cannot evaluate: no expiry rather than no run
        return None


def periodic_task_next_run(task: PeriodicTask, *, now: datetime | None = None) -> datetime | None:
    """When Beat sends ``task`` next: never before now or its start time; None if it never will
    (disabled, or a one-off that ran). Raises ``NextRunUnknown`` if it cannot be worked out."""
    now = now or timezone.now()
    if not task.enabled or (task.one_off and (task.total_run_count or task.last_run_at)):
        return None
    try:
        due = schedule_due_at(task.schedule, task.last_run_at or task.date_changed or now)
    except Exception as exc:  # (any error of Celery's schedule code means the same: unknown)
        raise NextRunUnknown(str(exc)) from exc
    due = max(due, now)
    return max(due, task.start_time) if task.start_time else due
