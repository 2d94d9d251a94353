"""A delivery that fails alone, outside any worker: the broker refused it for itself (a queue that
no longer exists), or its predicate raised. Its error is recorded on the row, it is tried again
with backoff, and after ``RELAY_ROW_MAX_FAILURES`` failures it becomes a dead letter with that
error, so one bad row neither blocks the others nor is retried for ever.

``Delivery.attempts`` counts these failures as it counts a worker's starts: both are tries.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from tasks.models import Delivery
from tasks.reliability.dead_letters import FailedDelivery, dead_letter_record

logger = logging.getLogger(__name__)

SEND_FAILED = "send failed"


def failure_backoff(failures: int) -> timedelta:
    """Exponential backoff after ``failures`` failures, capped at ``TASKS_RETRY_BACKOFF_MAX``."""
    return timedelta(seconds=min(2 ** max(failures, 0), settings.TASKS_RETRY_BACKOFF_MAX))


def failure_record(*, delivery: Delivery, exc: BaseException, statuses: tuple[str, ...], reason: str) -> bool:
    """Count one failure of ``delivery`` (only while its status is one of ``statuses``: a lost
    race does nothing), keep the error, and push its next try back; past the cap, dead-letter it.
    Returns whether it was dead-lettered."""
    error = f"{type(exc).__name__}: {exc}"[:2000]
    with transaction.atomic():
        row = Delivery.objects.select_for_update().filter(pk=delivery.pk, status__in=statuses).first()
        if row is None:
            return False
        failures = row.attempts + 1
        if failures < settings.RELAY_ROW_MAX_FAILURES:
            Delivery.objects.filter(pk=row.pk).update(
                attempts=F("attempts") + 1, last_error=error, sent_at=timezone.now() + failure_backoff(failures)
            )
            return False
        dead_letter_record(
            task_name="tasks.deliver",
            task_id=row.task_id,
            queue=row.queue,
            args=[row.payload, row.handler],
            kwargs={},
            exc=exc,
            traceback="",
            attempts=failures,
            reason=reason,
            delivery=FailedDelivery(
                message_id=str(row.message_id), handler=row.handler, message_type=row.message_type, payload=row.payload
            ),
        )
        # dead_letter_record made it dead (delivery_state's kill, under the same lock).
        Delivery.objects.filter(pk=row.pk).update(attempts=failures, last_error=error)
    logger.error("delivery %s dead-lettered after %d failures: %s", row.pk, failures, error)
    return True


def delivery_send_failed(*, delivery: Delivery, exc: BaseException) -> bool:
    """The broker refused this one delivery; see ``failure_record``."""
    return failure_record(
        delivery=delivery, exc=exc, statuses=(Delivery.Status.PENDING, Delivery.Status.RUNNING), reason=SEND_FAILED
    )
