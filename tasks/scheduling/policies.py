"""Misfire and overlap policies: whether Beat sends a due run or skips it.

A run is *missed* when it fell due before this Beat became active (Beat down, or between
leaders). ``Misfire.RUN_ONCE`` sends one run for all missed ones (Celery's own behaviour);
``Misfire.SKIP`` drops them and waits for the next due time. With ``Overlap.SKIP``, a due run is
not sent while the previous run of the same schedule is queued or running (its result row is
``STARTED``/``RETRY``, or the run this Beat sent has no result yet); runs older than the task's
hard time limit plus the broker's visibility timeout are treated as lost, so a lost message
never blocks a schedule for good. A schedule without a policy row runs once and skips overlap.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from celery import states
from django.conf import settings
from django.utils import timezone
from django_celery_results.models import TaskResult

from tasks.models import SchedulePolicy
from tasks.scheduling.entry import PlatformEntry

logger = logging.getLogger(__name__)

Misfire = SchedulePolicy.Misfire
Overlap = SchedulePolicy.Overlap

# A due time this much before the Beat became active counts as missed.
MISFIRE_TOLERANCE = datetime.timedelta(seconds=1)
UNFINISHED_STATES = (states.STARTED, states.RETRY)


def skip_reason(entry: PlatformEntry, *, active_since: datetime.datetime | None, app: Any) -> str:
    """Why the due run of ``entry`` is not sent, or "" to send it."""
    missed = entry.ran_before and _missed(entry, active_since)
    if missed and entry.misfire == Misfire.SKIP:
        return "missed run (misfire policy skip)"
    if entry.overlap == Overlap.SKIP and previous_run_unfinished(entry, app):
        return "previous run still running (overlap policy skip)"
    if missed:
        logger.info("PlatformScheduler: catching up missed run of %s (misfire policy run_once)", entry.name)
    return ""


def _missed(entry: PlatformEntry, active_since: datetime.datetime | None) -> bool:
    due = entry.due_at()
    return due is not None and active_since is not None and due < active_since - MISFIRE_TOLERANCE


def previous_run_unfinished(entry: PlatformEntry, app: Any) -> bool:
    """Whether the previous run of ``entry``'s schedule is queued or running (overlap skip)."""
    task = app.tasks.get(entry.task)
    if task is not None and task.ignore_result:
        return False  # no result rows to watch: overlap cannot be seen, so never block
    time_limit = (task.time_limit if task is not None else None) or app.conf.task_time_limit or 3600
    lost_after = time_limit + getattr(settings, "CELERY_VISIBILITY_TIMEOUT", 3600)
    # A database error propagates: Beat waits for the database rather than send unchecked.
    if TaskResult.objects.filter(
        periodic_task_name=entry.name,
        status__in=UNFINISHED_STATES,
        date_done__gte=timezone.now() - datetime.timedelta(seconds=lost_after),
    ).exists():
        return True
    if entry.last_task_id and time.monotonic() - (entry.last_sent_monotonic or 0) < lost_after:
        status = TaskResult.objects.filter(task_id=entry.last_task_id).values_list("status", flat=True).first()
        # No row yet: the run this Beat sent is still queued.
        return status is None or status in UNFINISHED_STATES
    return False
