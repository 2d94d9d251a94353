"""Dead letters: tasks that failed for good, kept whole so an operator can requeue them.

A requeued delivery is sent again with the same message id, so idempotency still holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from tasks.messaging.deliveries import DispatchError, deliveries_publish
from tasks.messaging.relay import OUTBOX_DEAD_LETTER_TASK
from tasks.models import DeadLetter, Delivery, Outbox
from tasks.queues import DEFAULT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FailedDelivery:
    """What a failed run delivered, as the task that failed says (``PlatformTask.failed_delivery``)."""

    message_id: str
    handler: str
    message_type: str
    payload: dict


def dead_letter_record(
    *,
    task_name: str,
    task_id: str,
    queue: str,
    args: list,
    kwargs: dict,
    exc: BaseException,
    traceback: str,
    attempts: int,
    reason: str,
    delivery: FailedDelivery | None = None,
) -> DeadLetter:
    """Keep a failed task. A delivery that dies again updates its existing dead letter."""
    fields: dict[str, Any] = {
        **DeadLetter.failure_fields(exc),
        "task_name": task_name,
        "task_id": task_id,
        "queue": queue,
        "args": args,
        "kwargs": kwargs,
        "reason": reason,
        "traceback": traceback,
        "status": DeadLetter.Status.DEAD,
    }
    first_failed_at = fields.pop("first_failed_at")  # kept from the first failure on an update
    with transaction.atomic():
        if delivery is not None:
            message_id, handler = delivery.message_id, delivery.handler
            fields.update(
                payload=delivery.payload, handler=handler, message_type=delivery.message_type, message_id=message_id
            )
            Delivery.objects.filter(message_id=message_id, handler=handler).update(status=Delivery.Status.DEAD)
            existing = DeadLetter.objects.select_for_update().filter(message_id=message_id, handler=handler).first()
            if existing:
                for name, value in fields.items():
                    setattr(existing, name, value)
                existing.attempts += attempts
                existing.save()
                return existing
        return DeadLetter.objects.create(attempts=attempts, first_failed_at=first_failed_at, **fields)


def dead_letter_requeue(*, dead_letter: DeadLetter) -> None:
    """Send the dead task again: a delivery with its message id, an unreadable outbox row back
    to the relay, any other task by name. The state is committed before the broker is asked."""
    delivery = None
    with transaction.atomic():
        if dead_letter.handler and dead_letter.message_id:
            delivery, _ = Delivery.objects.update_or_create(
                message_id=dead_letter.message_id,
                handler=dead_letter.handler,
                defaults={"status": Delivery.Status.PENDING, "unfinished_starts": 0, "sent_at": timezone.now()},
                create_defaults={
                    "status": Delivery.Status.PENDING,
                    "message_type": dead_letter.message_type,
                    "payload": dead_letter.payload,
                    "queue": dead_letter.queue or DEFAULT,
                    "task_id": dead_letter.task_id,
                    "sent_at": timezone.now(),
                },
            )
            Delivery.objects.filter(pk=delivery.pk).update(send_count=F("send_count") + 1)
        elif dead_letter.task_name == OUTBOX_DEAD_LETTER_TASK:
            Outbox.objects.filter(message_id=dead_letter.message_id).update(sent_at=None, last_error="")
        DeadLetter.objects.filter(pk=dead_letter.pk).update(
            status=DeadLetter.Status.REQUEUED, requeued_at=timezone.now(), requeue_count=F("requeue_count") + 1
        )
    try:
        if delivery is not None:
            deliveries_publish([delivery])
        elif dead_letter.task_name != OUTBOX_DEAD_LETTER_TASK:
            options = {"queue": dead_letter.queue} if dead_letter.queue else {}
            current_app.send_task(dead_letter.task_name, args=dead_letter.args, kwargs=dead_letter.kwargs, **options)
    except Exception as exc:
        DeadLetter.objects.filter(pk=dead_letter.pk).update(status=DeadLetter.Status.DEAD)
        if isinstance(exc, DispatchError):
            raise
        raise DispatchError(str(exc)) from exc
    logger.info("requeued dead letter %s (%s)", dead_letter.pk, dead_letter.task_name)


def dead_letters_requeue(*, dead_letters: QuerySet[DeadLetter]) -> int:
    """Requeue each dead letter of the selection that is still dead; return how many."""
    count = 0
    for dead_letter in dead_letters.filter(status=DeadLetter.Status.DEAD).iterator():
        dead_letter_requeue(dead_letter=dead_letter)
        count += 1
    return count


def dead_letters_discard(*, dead_letters: QuerySet[DeadLetter]) -> int:
    """Mark the selection discarded (kept for the record, never run); return how many."""
    return dead_letters.exclude(status=DeadLetter.Status.DISCARDED).update(status=DeadLetter.Status.DISCARDED)
