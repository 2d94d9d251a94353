"""``tasks.deliver``: the one Celery task that runs one async handler for one message.

The handler's work and the ``done`` mark of its Delivery row commit in one transaction, so a
redelivered message (acks_late, a re-sent delivery, a requeued dead letter) does nothing the
second time. Each start is counted first, in its own commit: a delivery that keeps starting
without finishing (its worker is killed every time) is dead-lettered instead of run again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from tasks.messages import Message, UnknownMessageType
from tasks.messaging.deliveries import DELIVER_TASK
from tasks.messaging.round_trips import execute_with_async_commit
from tasks.models import Delivery
from tasks.reliability.dead_letters import FailedDelivery
from tasks.reliability.log_context import log_context
from tasks.reliability.platform_task import PermanentError, PlatformTask, PoisonMessage
from tasks.reliability.task_results import task_result_store_success

logger = logging.getLogger(__name__)

DUPLICATE = "duplicate"
DONE = "done"


def _count_start(message: Message, handler: str, payload: dict, queue: str) -> int | None:
    """Record that this delivery started; the starts since its last clean finish, or None if it
    is done (or dead) already."""
    key = {"message_id": message.message_id, "handler": handler}
    unfinished = [Delivery.Status.PENDING, Delivery.Status.RUNNING]

    def start() -> int | None:
        # One statement, committed without waiting for the disk (a count lost in a crash only
        # gives a poison message one more try): this runs for every delivery.
        field = Delivery._meta.get_field("message_id")
        rows = execute_with_async_commit(
            f"UPDATE {Delivery._meta.db_table} "  # noqa: S608 (table name from the model, values bound)
            "SET status = %s, unfinished_starts = unfinished_starts + 1, attempts = attempts + 1 "
            "WHERE message_id = %s AND handler = %s AND status IN (%s, %s) RETURNING unfinished_starts",
            [
                Delivery.Status.RUNNING,
                field.get_db_prep_value(message.message_id, connection),
                handler,
                *unfinished,
            ],
        )
        return rows[0][0] if rows else None

    starts = start()
    if starts is not None:
        return starts
    _, created = Delivery.objects.get_or_create(
        **key,
        defaults={
            "message_type": message.message_name,
            "payload": payload,
            "queue": queue,
            "status": Delivery.Status.RUNNING,
            "unfinished_starts": 1,
            "attempts": 1,
            "sent_at": timezone.now(),
        },
    )
    # Not created: the row appeared meanwhile (its sender committed as we started); it may be
    # pending rather than done, so try the start again instead of calling it a duplicate.
    return 1 if created else start()


def delivery_run(*, payload: dict, handler: str, queue: str = "", on_done: Callable[[], None] | None = None) -> str:
    """Run ``handler`` for the message in ``payload`` once; ``"duplicate"`` if it ran before.

    ``on_done`` runs after the handler, inside its transaction: what it writes commits with it.
    """
    # The handler first: importing its module registers the message types it handles.
    try:
        func = import_string(handler)
    except ImportError as exc:
        raise PermanentError(f"cannot import handler {handler!r}: {exc}") from exc
    try:
        message = Message.from_json(payload)
    except (UnknownMessageType, KeyError, TypeError, ValueError) as exc:
        raise PermanentError(f"cannot read message: {exc}") from exc

    with log_context(message_id=message.message_id, handler=handler):
        starts = _count_start(message, handler, payload, queue)
        if starts is None:
            logger.info("delivery already done; skipped")
            return DUPLICATE
        if starts > settings.DELIVERY_MAX_UNFINISHED_STARTS:
            raise PoisonMessage(f"started {starts} times without finishing: its worker died each time")
        key = {"message_id": message.message_id, "handler": handler}
        try:
            with transaction.atomic():
                # Mark done first: the UPDATE takes the row lock, so a concurrent duplicate waits
                # here and then finds it done; if the handler fails, the rollback unmarks it.
                claimed = (
                    Delivery.objects.filter(**key)
                    .exclude(status__in=[Delivery.Status.DONE, Delivery.Status.DEAD])
                    .update(status=Delivery.Status.DONE, completed_at=timezone.now(), unfinished_starts=0)
                )
                if not claimed:
                    return DUPLICATE
                func(message)
                if on_done is not None:
                    on_done()
        except Exception:
            # A clean failure is a finish too; keep the sweeper off it while a retry waits.
            Delivery.objects.filter(**key, status=Delivery.Status.RUNNING).update(
                status=Delivery.Status.PENDING,
                unfinished_starts=0,
                sent_at=timezone.now() + timedelta(seconds=settings.TASKS_RETRY_BACKOFF_MAX),
            )
            raise
    return DONE


class DeliverTask(PlatformTask):
    """``PlatformTask`` for ``deliver``: a failed run names the delivery it was."""

    def failed_delivery(self, args: tuple, kwargs: dict) -> FailedDelivery | None:
        payload, handler = (*args, None, None)[:2]
        payload, handler = kwargs.get("payload", payload), kwargs.get("handler", handler)
        if not isinstance(payload, dict) or not isinstance(handler, str):
            return None  # not the arguments deliver takes: kept as a plain dead letter
        message_id = (payload.get("data") or {}).get("message_id")
        if not message_id:
            return None
        return FailedDelivery(
            message_id=message_id, handler=handler, message_type=payload.get("type", ""), payload=payload
        )


# The task's SUCCESS result is written in the handler's transaction (``on_done``), not by Celery
# afterwards in a transaction of its own: one durable commit per delivery instead of two, and the
# result exists exactly when the work does. Failures and retries are still stored by Celery
# (store_errors_even_if_ignored). track_started is off: the Delivery row records the start.
@shared_task(
    base=DeliverTask,
    bind=True,
    name=DELIVER_TASK,
    track_started=False,
    ignore_result=True,
    store_errors_even_if_ignored=True,
)
def deliver(self: DeliverTask, payload: dict, handler: str) -> str:
    """Run one async handler for one message (see ``delivery_run``)."""
    queue = (self.request.delivery_info or {}).get("routing_key") or ""
    request = self.request

    def store_success() -> None:
        task_result_store_success(backend=self.backend, request=request, result=DONE)

    return delivery_run(payload=payload, handler=handler, queue=queue, on_done=store_success)
