"""Dead letters: tasks that failed for good, kept whole so an operator can requeue them.

A requeued delivery is sent again with the same message id, so idempotency still holds.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from tasks.dispatch import DELIVER_TASK, DispatchError, publish_deliveries
from tasks.models import DeadLetter, Delivery, Outbox

# The task name of dead letters made from unreadable outbox rows (see tasks.outbox).
OUTBOX_DEAD_LETTER_TASK = "tasks.outbox"

logger = logging.getLogger(__name__)


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
) -> DeadLetter:
    """Keep a failed task. A delivery that dies again updates its existing dead letter."""
    now = timezone.now()
    fields: dict[str, Any] = {
        "task_name": task_name,
        "task_id": task_id,
        "queue": queue,
        "args": args,
        "kwargs": kwargs,
        "reason": reason,
        "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "exception_message": str(exc),
        "traceback": traceback,
        "last_failed_at": now,
        "status": DeadLetter.Status.DEAD,
    }
    with transaction.atomic():
        if task_name == DELIVER_TASK and len(args) == 2 and isinstance(args[0], dict):
            payload, handler = args
            message_id = (payload.get("data") or {}).get("message_id")
            fields.update(payload=payload, handler=handler, message_type=payload.get("type", ""), message_id=message_id)
            Delivery.objects.filter(message_id=message_id, handler=handler).update(status=Delivery.Status.DEAD)
            existing = (
                DeadLetter.objects.select_for_update().filter(message_id=message_id, handler=handler).first()
                if message_id
                else None
            )
            if existing:
                for name, value in fields.items():
                    setattr(existing, name, value)
                existing.attempts += attempts
                existing.save()
                return existing
        return DeadLetter.objects.create(attempts=attempts, first_failed_at=now, **fields)


def dead_letter_requeue(*, dead_letter: DeadLetter) -> None:
    """Send the dead task again: a delivery with its message id, an unreadable outbox row back
    to the relay, any other task by name. The state is committed before the broker is asked."""
    from config.celery_app import app

    delivery = None
    with transaction.atomic():
        if dead_letter.task_name == DELIVER_TASK and dead_letter.message_id:
            delivery, _ = Delivery.objects.update_or_create(
                message_id=dead_letter.message_id,
                handler=dead_letter.handler,
                defaults={"status": Delivery.Status.PENDING, "unfinished_starts": 0, "sent_at": timezone.now()},
                create_defaults={
                    "status": Delivery.Status.PENDING,
                    "message_type": dead_letter.message_type,
                    "payload": dead_letter.payload,
                    "queue": dead_letter.queue or "default",
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
            publish_deliveries([delivery])
        elif dead_letter.task_name != OUTBOX_DEAD_LETTER_TASK:
            options = {"queue": dead_letter.queue} if dead_letter.queue else {}
            app.send_task(dead_letter.task_name, args=dead_letter.args, kwargs=dead_letter.kwargs, **options)
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
