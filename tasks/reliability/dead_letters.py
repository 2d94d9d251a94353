"""Dead letters: tasks that failed for good, kept whole so an operator can requeue them.

A requeued delivery is sent again with the same message id, so idempotency still holds.
Requeue and discard lock the dead letter they act on and re-check its status inside the lock,
so two admins (or ``dead_letters requeue --all`` run twice) send each one once. A delivery's
status changes only through ``tasks.reliability.delivery_state``: a dead letter never turns a
done delivery dead, and requeueing one whose delivery is done resolves it and sends nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from celery import current_app
from django.db import transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.utils import timezone

from tasks.messaging.deliveries import DispatchError, deliveries_publish
from tasks.messaging.relay import OUTBOX_DEAD_LETTER_TASK
from tasks.messaging.trace_context import trace_context_capture, trace_link, tracer
from tasks.models import DeadLetter, Delivery, Outbox
from tasks.queues import DEFAULT
from tasks.reliability.delivery_state import delivery_kill, delivery_requeue

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
    """Keep a failed task. A delivery that dies again updates its existing dead letter.

    An exception may name its own reason (``dead_letter_reason``: "refused", "unknown type").
    The delivery becomes dead only if it was pending or running: a stale copy that failed
    before it could see the done mark leaves a done delivery done.
    """
    fields: dict[str, Any] = {
        **DeadLetter.failure_fields(exc),
        "task_name": task_name,
        "task_id": task_id,
        "queue": queue,
        "args": args,
        "kwargs": kwargs,
        "reason": getattr(exc, "dead_letter_reason", None) or reason,
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
            delivery_kill(message_id=message_id, handler=handler)
            existing = DeadLetter.objects.select_for_update().filter(message_id=message_id, handler=handler).first()
            if existing:
                for name, value in fields.items():
                    setattr(existing, name, value)
                existing.attempts += attempts
                existing.save()
                return existing
        return DeadLetter.objects.create(attempts=attempts, first_failed_at=first_failed_at, **fields)


class Requeued(StrEnum):
    """What a requeue did."""

    SENT = "sent"  # sent again
    RESOLVED = "resolved"  # its delivery was done already: marked resolved, nothing sent
    SKIPPED = "skipped"  # not dead (any more): another requeue or a discard came first


def dead_letter_requeue(*, dead_letter: DeadLetter | int) -> Requeued:
    """Send the dead task again: a delivery with its message id, an unreadable outbox row back
    to the relay, any other task by name. The dead letter is locked and re-checked first, and
    the state is committed before the broker is asked."""
    pk = dead_letter if isinstance(dead_letter, int) else dead_letter.pk
    delivery = None
    with transaction.atomic():
        locked = DeadLetter.objects.select_for_update().filter(pk=pk, status=DeadLetter.Status.DEAD).first()
        if locked is None:
            return Requeued.SKIPPED
        if locked.handler and locked.message_id:
            delivery = _delivery_for_requeue(locked)
            if delivery is None:
                DeadLetter.objects.filter(pk=pk).update(status=DeadLetter.Status.RESOLVED)
                logger.info("dead letter %s resolved: its delivery is done", pk)
                return Requeued.RESOLVED
        elif locked.task_name == OUTBOX_DEAD_LETTER_TASK:
            Outbox.objects.filter(message_id=locked.message_id).update(sent_at=None, last_error="")
        DeadLetter.objects.filter(pk=pk).update(
            status=DeadLetter.Status.REQUEUED, requeued_at=timezone.now(), requeue_count=F("requeue_count") + 1
        )
    # A requeue is new work an operator started: a span of its own (in the admin request's
    # trace), linked to the span that registered the event, and the delivery continues it.
    original = delivery.trace_context if delivery is not None else None
    try:
        with tracer.start_as_current_span(f"requeue {locked.handler or locked.task_name}", links=trace_link(original)):
            if delivery is not None:
                _continue_trace_here(delivery)
                deliveries_publish([delivery])
            elif locked.task_name != OUTBOX_DEAD_LETTER_TASK:
                options = {"queue": locked.queue} if locked.queue else {}
                current_app.send_task(locked.task_name, args=locked.args, kwargs=locked.kwargs, **options)
    except Exception as exc:
        # Dead again so it can be requeued again; a delivery left pending is harmless to send twice.
        DeadLetter.objects.filter(pk=pk).update(status=DeadLetter.Status.DEAD)
        if isinstance(exc, DispatchError):
            raise
        raise DispatchError(str(exc)) from exc
    logger.info("requeued dead letter %s (%s)", pk, locked.task_name)
    return Requeued.SENT


def _continue_trace_here(delivery: Delivery) -> None:
    """Later sends of ``delivery`` (the sweeper's) continue the current span, not the first trace."""
    carrier = trace_context_capture()
    if carrier:
        delivery.trace_context = carrier
        Delivery.objects.filter(pk=delivery.pk).update(trace_context=carrier)


def _delivery_for_requeue(dead_letter: DeadLetter) -> Delivery | None:
    """The delivery to send again for ``dead_letter`` (dead -> pending); None if it is done.

    A delivery that is pending or running already (a requeue whose send failed) is sent as it
    is; one that is gone (pruned) is recorded again from the dead letter.
    """
    key = {"message_id": dead_letter.message_id, "handler": dead_letter.handler}
    delivery_requeue(**key)
    delivery, _ = Delivery.objects.get_or_create(
        **key,
        defaults={
            "message_type": dead_letter.message_type,
            "payload": dead_letter.payload,
            "queue": dead_letter.queue or DEFAULT,
            "task_id": dead_letter.task_id,
            "sent_at": timezone.now(),
            "send_count": 1,
        },
    )
    return None if delivery.status == Delivery.Status.DONE else delivery


def dead_letters_requeue_report(*, dead_letters: QuerySet[DeadLetter]) -> dict[Requeued, int]:
    """Requeue each dead letter of the selection that is still dead when its turn comes (each is
    locked and re-checked on its own); return how many were sent, resolved and skipped."""
    counts = dict.fromkeys(Requeued, 0)
    for pk in list(dead_letters.filter(status=DeadLetter.Status.DEAD).values_list("pk", flat=True)):
        counts[dead_letter_requeue(dead_letter=pk)] += 1
    return counts


def dead_letters_of(*, deliveries: QuerySet[Delivery]) -> QuerySet[DeadLetter]:
    """The dead letters (still dead) of the dead ones among ``deliveries``, matched by message id
    and handler."""
    dead = deliveries.filter(
        status=Delivery.Status.DEAD, message_id=OuterRef("message_id"), handler=OuterRef("handler")
    )
    return DeadLetter.objects.filter(Exists(dead), status=DeadLetter.Status.DEAD)


def dead_letters_requeue(*, dead_letters: QuerySet[DeadLetter]) -> int:
    """Requeue the selection as ``dead_letters_requeue_report`` does; return how many were sent."""
    return dead_letters_requeue_report(dead_letters=dead_letters)[Requeued.SENT]


def dead_letters_discard(*, dead_letters: QuerySet[DeadLetter]) -> int:
    """Mark the selection discarded (kept for the record, never run); return how many.

    One conditional UPDATE: a row a requeue holds is changed after that requeue commits, so a
    discard never comes between a requeue's check and its send.
    """
    return dead_letters.exclude(status=DeadLetter.Status.DISCARDED).update(status=DeadLetter.Status.DISCARDED)
