"""Backfill: send the runs a schedule implied in a past window and that were never recorded.

Each run is recorded as Beat records its own (``ScheduledRun``, unique per schedule and due
time), so a backfill never sends a run Beat sent, two backfills of one window send each run once,
and a run the broker refuses waits for the relay. The schedule's overlap policy holds: with
``skip`` (the default) only the latest missing run is sent, and none while a previous run is
still queued or running; with ``allow`` every missing run is sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from celery import current_app
from django.db import IntegrityError, transaction
from django_celery_beat.models import PeriodicTask

from tasks.models import ScheduledRun, SchedulePolicy
from tasks.scheduling.entry import PlatformEntry
from tasks.scheduling.next_run import run_expires
from tasks.scheduling.policies import previous_run_unfinished
from tasks.scheduling.punctuality import MAX_DUE_TIMES, implied_due_times
from tasks.scheduling.runs import scheduled_run_send, stored_options

BACKFILL_LEADER = "backfill"


@dataclass
class Backfill:
    """What a backfill did: due times sent, recorded but left to the relay, and skipped (why)."""

    sent: list[datetime] = field(default_factory=list)
    unsent: list[datetime] = field(default_factory=list)
    skipped: int = 0
    reason: str = ""


def schedule_backfill(*, task: PeriodicTask, start: datetime, end: datetime) -> Backfill:
    """Send the runs ``task`` implied in ``start``..``end`` that no one recorded (see module)."""
    if end <= start:
        raise ValueError("the window must end after it starts")
    recorded = set(
        ScheduledRun.objects.filter(periodic_task_name=task.name, due_at__gte=start, due_at__lte=end).values_list(
            "due_at", flat=True
        )
    )
    missing = [due for due in implied_due_times(task.schedule, start=start, end=end) if due not in recorded]
    outcome = Backfill()
    if len(missing) >= MAX_DUE_TIMES:
        raise ValueError(f"the window holds {MAX_DUE_TIMES} or more runs of {task.name}: choose a shorter one")
    entry = PlatformEntry(task, app=current_app)
    if entry.overlap == SchedulePolicy.Overlap.SKIP and missing:
        if previous_run_unfinished(entry, current_app):
            outcome.skipped, outcome.reason = len(missing), "a previous run is still queued or running (overlap skip)"
            return outcome
        outcome.skipped, missing = len(missing) - 1, missing[-1:]
        if outcome.skipped:
            outcome.reason = "overlap skip: only the latest missing run"
    for due in missing:
        run = _record(task=task, entry=entry, due_at=due)
        if run is None:
            continue  # recorded meanwhile (Beat, another backfill): theirs to send
        (outcome.sent if scheduled_run_send(run_id=run.pk) else outcome.unsent).append(due)
    return outcome


def _record(*, task: PeriodicTask, entry: PlatformEntry, due_at: datetime) -> ScheduledRun | None:
    options = {
        **entry.options,
        "expires": run_expires(entry.schedule, due_at, own=entry.options.get("expires")),
        "headers": {**entry.options.get("headers", {}), "celery_beat_task": True, "backfill": True},
    }
    try:
        with transaction.atomic():
            return ScheduledRun.objects.create(
                periodic_task_name=task.name,
                due_at=due_at,
                task=task.task,
                args=list(entry.args),
                kwargs=dict(entry.kwargs),
                options=stored_options(options),
                task_id=str(uuid.uuid4()),
                leader=BACKFILL_LEADER,
                leader_generation=0,
            )
    except IntegrityError:
        return None
