"""The platform's Celery tasks (Celery's autodiscovery imports this module) and their schedules.

Each task is thin: it calls a service and returns something small for the task results.
``declare_schedules`` declares the housekeeping defaults that ``sync_schedules`` writes;
``TasksConfig.ready()`` calls it.
"""

from __future__ import annotations

import socket

from celery import shared_task
from celery.schedules import crontab
from django.utils import timezone

from tasks.messaging.delivery_prune import deliveries_prune_done
from tasks.messaging.outbox_prune import outbox_prune_sent
from tasks.queues import LOW_PRIORITY
from tasks.reliability.deliver import deliver
from tasks.reliability.platform_task import PlatformTask
from tasks.scheduling.declared import declare_schedule
from tasks.scheduling.policies import Misfire, Overlap

PRUNE_SENT_OUTBOX_TASK = "tasks.prune_sent_outbox"
PRUNE_DELIVERIES_TASK = "tasks.prune_deliveries"
BACKEND_CLEANUP_TASK = "celery.backend_cleanup"

__all__ = ["declare_schedules", "deliver", "noop", "ping", "prune_deliveries", "prune_sent_outbox"]


@shared_task(name="tasks.ping")
def ping() -> dict:
    """Answer from a worker: its host name and time, stored in the task results."""
    return {"pong": True, "hostname": socket.gethostname(), "at": timezone.now().isoformat()}


@shared_task(name="tasks.noop", ignore_result=True)
def noop() -> None:
    """Do nothing and store no result: a harmless job for trying out schedules."""


@shared_task(base=PlatformTask, name=PRUNE_SENT_OUTBOX_TASK, queue=LOW_PRIORITY)
def prune_sent_outbox() -> dict:
    """Periodic job: prune sent outbox rows past their retention."""
    return {"deleted": outbox_prune_sent()}


@shared_task(base=PlatformTask, name=PRUNE_DELIVERIES_TASK, queue=LOW_PRIORITY)
def prune_deliveries() -> dict:
    """Periodic job: prune done deliveries past the idempotency window (DELIVERY_RETENTION_DAYS)."""
    return {"deleted": deliveries_prune_done()}


def declare_schedules() -> None:
    """Declare the platform's housekeeping schedules."""
    declare_schedule(
        name="prune_sent_outbox",
        task=PRUNE_SENT_OUTBOX_TASK,
        schedule=crontab(minute="30", hour="3"),
        description="Delete outbox rows sent more than OUTBOX_RETENTION_DAYS ago.",
        queue=LOW_PRIORITY,
        misfire=Misfire.RUN_ONCE,
        overlap=Overlap.SKIP,
    )
    declare_schedule(
        name="prune_deliveries",
        task=PRUNE_DELIVERIES_TASK,
        schedule=crontab(minute="45", hour="3"),
        description="Delete done deliveries completed more than DELIVERY_RETENTION_DAYS ago (the idempotency window).",
        queue=LOW_PRIORITY,
        misfire=Misfire.RUN_ONCE,
        overlap=Overlap.SKIP,
    )
    declare_schedule(
        # Celery's own name for it, so a row the stock scheduler once created is adopted.
        name=BACKEND_CLEANUP_TASK,
        task=BACKEND_CLEANUP_TASK,
        schedule=crontab(minute="0", hour="4"),
        description="Delete task results older than CELERY_RESULT_EXPIRES.",
        queue=LOW_PRIORITY,
        misfire=Misfire.RUN_ONCE,
        overlap=Overlap.SKIP,
    )
