"""``tasks.deliver``: the one Celery task that runs one async handler for one message.

The handler is found in the subscription registry (an async subscription of the message's type,
by its path or a path it replaces), never imported by the name the broker sends: a message that
names anything else is refused and dead-lettered, never run. A worker that does not know the
type or handler yet (a rolling deploy) retries it for ``DELIVERY_DEPLOY_WINDOW`` first.

The handler's work and the ``done`` mark of its Delivery row commit in one transaction, so a
redelivered message (acks_late, a re-sent delivery, a requeued dead letter) does nothing the
second time. Each start is counted first, in its own commit: a delivery that keeps starting
without finishing (its worker is killed every time) is dead-lettered instead of run again.
Status changes go through ``tasks.reliability.delivery_state``.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Sequence

from celery import shared_task
from celery.exceptions import Retry
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tasks.messages import Message, UnknownMessageShape, UnknownMessageType, message_type_for
from tasks.messaging.brokers import async_subscription_resolve
from tasks.messaging.deliveries import DELIVER_TASK
from tasks.messaging.subscriptions import Subscription
from tasks.messaging.trace_context import tracer
from tasks.reliability.cancellation import JobCancelled, delivery_running
from tasks.reliability.dead_letters import FailedDelivery
from tasks.reliability.delivery_requests import DeliverRequest
from tasks.reliability.delivery_state import (
    Statement,
    delivery_created_at,
    delivery_finish,
    delivery_postpone,
    delivery_release,
    delivery_start,
    delivery_stop,
    retry_time,
)
from tasks.reliability.flow_limits import delivery_admit, delivery_slot_free
from tasks.reliability.log_context import log_context
from tasks.reliability.platform_task import PermanentError, PlatformTask, PoisonMessage
from tasks.reliability.task_results import task_result_success_sql

logger = logging.getLogger(__name__)

DUPLICATE = "duplicate"
DONE = "done"
CANCELLED = "cancelled"
WAITING = "waiting"


class RefusedDelivery(PermanentError):
    """Not a delivery any process planned: a forged or malformed message. Never run, never retried."""

    dead_letter_reason = "refused"


class UnknownToThisWorker(PermanentError):
    """A delivery whose message type, shape or handler this worker's code does not know."""

    # Class attributes, not constructor arguments: Celery may pickle the exception on its way to
    # on_failure, and only the message survives that.
    dead_letter_reason = "unknown type"


class UnknownHandler(UnknownToThisWorker):
    """No async subscription of the message's type answers to the delivery's handler path."""

    dead_letter_reason = "unknown handler"


def delivery_resolve(*, payload: object, handler: object) -> tuple[Message, Subscription]:
    """The message in ``payload`` and the subscription that handles it under ``handler``.

    Raises ``RefusedDelivery`` for arguments that are not a delivery, ``UnknownToThisWorker``
    when the type, shape or handler is unknown here, ``PermanentError`` for an unreadable payload.
    """
    if not (
        isinstance(payload, dict)
        and isinstance(payload.get("type"), str)
        and isinstance(payload.get("data"), dict)
        and isinstance(handler, str)
    ):
        raise RefusedDelivery(f"not a delivery: payload {type(payload).__name__}, handler {handler!r}")
    try:
        message_type = message_type_for(payload["type"])
    except UnknownMessageType as exc:
        raise UnknownToThisWorker(str(exc)) from exc
    subscription = async_subscription_resolve(message_type, handler)
    if subscription is None:
        raise UnknownHandler(f"no async subscription of {message_type.message_name} for handler {handler!r}")
    try:
        message = message_type.from_json(payload)
    except UnknownMessageShape as exc:
        raise UnknownToThisWorker(str(exc)) from exc
    except (UnknownMessageType, KeyError, TypeError, ValueError) as exc:
        raise PermanentError(f"cannot read message: {exc}") from exc
    return message, subscription


def delivery_run(
    *, payload: dict, handler: str, queue: str = "", with_done: Callable[[], Sequence[Statement]] | None = None
) -> str:
    """Run ``handler`` for the message in ``payload`` once; ``"duplicate"`` if it ran before,
    ``"cancelled"`` if it stopped on a cancel request (``JobCancelled``), ``"waiting"`` if a flow
    limit holds it back (it waits in the database; the relay sends it again when allowed).

    ``with_done`` gives statements that run with the done mark, in the handler's transaction
    (the task's result): they commit with the handler's work, or not at all.
    """
    message, subscription = delivery_resolve(payload=payload, handler=handler)
    key = {"message_id": message.message_id, "handler": handler}
    with log_context(message_id=message.message_id, handler=handler):
        if not delivery_admit(message=message, subscription=subscription, handler=handler):
            return WAITING
        starts = delivery_start(**key, message_type=message.message_name, payload=payload, queue=queue)
        if starts is None:
            logger.info("delivery already done; skipped")
            return DUPLICATE
        if starts > settings.DELIVERY_MAX_UNFINISHED_STARTS:
            raise PoisonMessage(f"started {starts} times without finishing: its worker died each time")
        try:
            with transaction.atomic():
                # Mark done first: a concurrent duplicate waits on the row and then finds it
                # done; if the handler fails, the rollback unmarks it.
                if not delivery_finish(**key, with_statements=with_done() if with_done else ()):
                    transaction.set_rollback(True)  # what ran with the mark, as if never run
                    return DUPLICATE
                with (
                    tracer.start_as_current_span(
                        f"handle {handler}",
                        attributes={"messaging.message.id": str(message.message_id), "code.function": handler},
                    ),
                    delivery_running(**key),
                ):
                    subscription.handler(message)
        except JobCancelled as exc:
            # Its work rolled back with the transaction; it ends cancelled, never retried or dead.
            delivery_stop(**key)
            logger.info("delivery stopped on a cancel request: %s", exc)
            return CANCELLED
        except Exception:
            # A clean failure is a finish too; keep the sweeper off it while a retry waits.
            delivery_release(**key, retry_at=retry_time(settings.TASKS_RETRY_BACKOFF_MAX))
            raise
        finally:
            delivery_slot_free(message=message, subscription=subscription, handler=handler)
    return DONE


def deploy_window_wait(*, payload: object, handler: object, exc: UnknownToThisWorker) -> float:
    """Seconds to wait before this worker (or a newer one) tries ``exc``'s delivery again.

    Raises ``RefusedDelivery`` when no process ever recorded the delivery (nobody planned it:
    forged), and ``exc`` itself once ``DELIVERY_DEPLOY_WINDOW`` has passed since it was recorded.
    """
    data = payload.get("data") if isinstance(payload, dict) else None
    raw_id = data.get("message_id") if isinstance(data, dict) else None
    try:
        message_id = uuid.UUID(str(raw_id))
    except ValueError:
        message_id = None
    created = (
        delivery_created_at(message_id=message_id, handler=handler) if message_id and isinstance(handler, str) else None
    )
    if created is None:
        raise RefusedDelivery(f"{exc}; and no process recorded this delivery") from exc
    waited = (timezone.now() - created).total_seconds()
    if waited >= settings.DELIVERY_DEPLOY_WINDOW:
        raise exc
    # Backoff that grows with the time waited so far (about doubling each try), jittered, capped.
    ceiling = min(max(waited, 1.0), settings.TASKS_RETRY_BACKOFF_MAX)
    countdown = random.uniform(ceiling / 2, ceiling)
    # The sweeper counts from sent_at: it leaves the row alone while this retry waits.
    delivery_postpone(message_id=message_id, handler=handler, until=retry_time(countdown))
    return countdown


class DeliverTask(PlatformTask):
    """``PlatformTask`` for ``deliver``: a failed run names the delivery it was; a run the
    platform cancels (shutdown, lost broker) gives its start back (``DeliverRequest``)."""

    Request = DeliverRequest

    def failed_delivery(self, args: tuple, kwargs: dict) -> FailedDelivery | None:
        payload, handler = (*args, None, None)[:2]
        payload, handler = kwargs.get("payload", payload), kwargs.get("handler", handler)
        if not isinstance(payload, dict) or not isinstance(handler, str):
            return None  # not the arguments deliver takes: kept as a plain dead letter
        data = payload.get("data")
        try:
            message_id = uuid.UUID(str(data.get("message_id"))) if isinstance(data, dict) else None
        except ValueError:
            message_id = None
        if message_id is None:
            return None
        return FailedDelivery(
            message_id=str(message_id), handler=handler, message_type=payload.get("type", ""), payload=payload
        )


# The task's SUCCESS result is written in the handler's transaction, in the same round trip as the
# done mark (``with_done``), not by Celery afterwards in a transaction of its own: one durable
# commit per delivery instead of two, and the result exists exactly when the work does (its
# date_done is when the handler started). Failures and retries are still stored by Celery
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

    def success() -> list[Statement]:
        return [task_result_success_sql(backend=self.backend, request=request, result=DONE)]

    try:
        return delivery_run(payload=payload, handler=handler, queue=queue, with_done=success)
    except UnknownToThisWorker as exc:
        countdown = deploy_window_wait(payload=payload, handler=handler, exc=exc)
        if request.is_eager:
            raise  # an eager run has no queue to wait on
        logger.warning("%s; retrying in %.0f s (deploy window)", exc, countdown)
        # A new retry chain (retries=0), so the wait does not use up the transient-error retries.
        signature = self.signature_from_request(request, countdown=countdown, retries=0)
        signature.apply_async()
        raise Retry(exc=exc, when=countdown, sig=signature) from exc
