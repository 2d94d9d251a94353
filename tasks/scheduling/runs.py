"""Scheduled runs: each due run of a schedule is recorded, under the Beat lease, before it is sent.

The record is keyed by (schedule, due time), so however often Beat restarts, fails over or
retries, one due time is recorded once; and it is written only while this Beat holds the lease
with the generation it acquired (the fencing token), in the same transaction that locks the
lease row, so a leader that lost its lease (stalled past it, then resumed) records nothing.

Sending claims the row (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and marks it sent in the same
transaction, so Beat and the relay never both send it. A run that could not be sent (broker
down) stays unsent and the relay's pass sends it once the broker is back.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import Any

from celery import current_app
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tasks.messaging.trace_context import tracer
from tasks.models import BEAT_LEASE_NAME, BeatHeartbeat, ScheduledRun
from tasks.scheduling.lease import BeatLease

logger = logging.getLogger(__name__)

RUN_HEADER = "scheduled_run_id"


def job_send(*, task: str, args: list, kwargs: dict, options: dict[str, Any], task_id: str | None = None) -> Any:
    """Send job ``task`` as Beat does: through the registered task (its own queue and options)
    when this process knows it, by name otherwise; never retrying a broker that is down."""
    app = current_app._get_current_object()
    registered = app.tasks.get(task)
    if registered is not None:
        return registered.apply_async(args=args, kwargs=kwargs, task_id=task_id, retry=False, **options)
    return app.send_task(task, args=args, kwargs=kwargs, task_id=task_id, retry=False, **options)


def stored_options(options: dict[str, Any]) -> dict[str, Any]:
    """A run's send options as its row stores them (JSON: an expiry datetime as ISO text)."""
    stored = dict(options)
    if isinstance(stored.get("expires"), datetime.datetime):
        stored["expires"] = stored["expires"].isoformat()
    return stored


def _send_options(run: ScheduledRun) -> dict[str, Any]:
    options = dict(run.options)
    if isinstance(options.get("expires"), str):
        options["expires"] = parse_datetime(options["expires"])
    options["headers"] = {**options.get("headers", {}), RUN_HEADER: run.pk}
    return options


def scheduled_run_record(
    *,
    lease: BeatLease,
    periodic_task_name: str,
    due_at: datetime.datetime,
    task: str,
    args: list,
    kwargs: dict,
    options: dict[str, Any],
) -> tuple[ScheduledRun | None, bool]:
    """Record the due run under ``lease``: ``(run, created)``; ``(None, False)`` if the lease is
    no longer this Beat's. Raises ``DatabaseError`` when the database is down (Beat waits)."""
    with transaction.atomic():
        held = list(
            BeatHeartbeat.objects.select_for_update()
            .filter(
                name=BEAT_LEASE_NAME,
                leader=lease.identity,
                generation=lease.generation,
                last_tick_at__gte=Now() - datetime.timedelta(seconds=lease.ttl),
            )
            .values_list("pk", flat=True)
        )
        if not held:
            return None, False
        return ScheduledRun.objects.get_or_create(
            periodic_task_name=periodic_task_name,
            due_at=due_at,
            defaults={
                "task": task,
                "args": list(args),
                "kwargs": dict(kwargs),
                "options": stored_options(options),
                "task_id": str(uuid.uuid4()),
                "leader": lease.identity,
                "leader_generation": lease.generation,
            },
        )


def scheduled_run_send(*, run_id: int) -> bool:
    """Send the recorded run unless it was sent or is being sent; True if this call sent it.

    A broker error is recorded on the row (it stays unsent for the relay) and returns False.
    """
    with transaction.atomic():
        unsent = ScheduledRun.objects.filter(pk=run_id, sent_at__isnull=True)
        if connection.features.has_select_for_update_skip_locked:
            unsent = unsent.select_for_update(skip_locked=True)
        run = unsent.first()
        if run is None:
            return False
        try:
            with tracer.start_as_current_span(
                f"beat send {run.periodic_task_name}", attributes={"beat.due_at": run.due_at.isoformat()}
            ):
                job_send(
                    task=run.task, args=run.args, kwargs=run.kwargs, options=_send_options(run), task_id=run.task_id
                )
        except Exception as exc:
            logger.warning("could not send the run of %s due %s: %s", run.periodic_task_name, run.due_at, exc)
            ScheduledRun.objects.filter(pk=run.pk).update(attempts=F("attempts") + 1, last_error=str(exc)[:2000])
            return False
        ScheduledRun.objects.filter(pk=run.pk).update(sent_at=timezone.now(), attempts=F("attempts") + 1, last_error="")
    logger.info(
        "PlatformScheduler: sent %s at %s id=%s", run.periodic_task_name, timezone.now().isoformat(), run.task_id
    )
    return True


def scheduled_runs_send_unsent(
    *, older_than: datetime.timedelta = datetime.timedelta(seconds=5), limit: int = 100
) -> int:
    """The relay's pass: send runs recorded more than ``older_than`` ago and still unsent (the
    broker was down when Beat recorded them); return how many were sent."""
    cutoff = timezone.now() - older_than
    ids = list(
        ScheduledRun.objects.filter(sent_at__isnull=True, recorded_at__lte=cutoff)
        .order_by("recorded_at")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(scheduled_run_send(run_id=run_id) for run_id in ids)


def scheduled_run_unsent(periodic_task_name: str) -> bool:
    """True while a recorded run of this schedule waits to be sent: it covers the due times that
    pass meanwhile, as the misfire policy says."""
    return ScheduledRun.objects.filter(periodic_task_name=periodic_task_name, sent_at__isnull=True).exists()
