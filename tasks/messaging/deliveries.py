"""Sending async deliveries to Celery: record each one, then publish it, without blocking.

Each (message, handler) pair is recorded as a ``Delivery`` row before its task is published,
so a message that never reaches a worker (broker down, or a worker killed in the moment
between kombu taking a message off a Redis list and recording it as unacknowledged) is still
known, and the sweeper (``tasks.reliability.sweeper``) sends it again. Handlers are idempotent per
(message_id, handler), so a second send is harmless.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime

from celery import current_app
from celery.exceptions import CeleryError
from django.db import transaction
from django.utils import timezone
from kombu import Producer
from kombu import exceptions as kombu_exceptions
from kombu.pools import ProducerPool

from tasks.messages import Message
from tasks.messaging.batch_context import current_batch_id
from tasks.messaging.flow_limit_overrides import unique_window
from tasks.messaging.subscriptions import Subscription
from tasks.messaging.trace_context import trace_context_capture, trace_context_restored
from tasks.messaging.unique_deliveries import deliveries_insert_unique, unique_key_and_due
from tasks.models import Delivery
from tasks.queues import broker_priority, queue_deadline

logger = logging.getLogger(__name__)

# The deliver task is sent by name: it is defined in tasks.reliability, which builds on this module.
DELIVER_TASK = "tasks.deliver"
PUBLISH_BATCH = 500


# Errors a message makes itself, whatever the broker's health (see broker_unavailable).
ROW_ERRORS = (
    CeleryError,
    kombu_exceptions.EncodeError,
    kombu_exceptions.ContentDisallowed,
    kombu_exceptions.SerializerNotInstalled,
    TypeError,
    ValueError,
)


class DispatchError(RuntimeError):
    """The broker could not take the messages; they stay recorded for the relay or sweeper."""


_pool: tuple[int, ProducerPool] | None = None


def _producer_pool() -> ProducerPool:
    """A producer pool whose connections never retry: a publisher thread, a relay pass or a
    caller that gives up at once when the broker is down leaves the event to the outbox, which
    keeps it, instead of holding up what comes after it.

    Rebuilt after a fork, as Celery does for its own pools.
    """
    global _pool  # noqa: PLW0603 (a per-process cache)
    if _pool is None or _pool[0] != os.getpid():
        app = current_app._get_current_object()
        options = {**app.conf.broker_transport_options, "max_retries": 0}
        connection = app.connection_for_write(transport_options=options)
        limit = app.conf.broker_pool_limit
        _pool = (os.getpid(), ProducerPool(connection.Pool(limit=limit), limit=limit, Producer=app.amqp.Producer))
    return _pool[1]


def deliveries_build(
    plan: Iterable[tuple[Message, Subscription]],
    *,
    trace_context: dict[str, str] | None = None,
    run_after: datetime | None = None,
) -> list[Delivery]:
    """One unsaved Delivery per (message, subscription), continuing ``trace_context``: pending,
    or delayed (held in the database, unsent) when ``run_after`` is in the future; a member of
    the current batch (``batch_context``), if any."""
    now = timezone.now()
    batch_id = current_batch_id()
    rows = []
    for message, subscription in plan:
        key, due = unique_key_and_due(message, subscription, run_after=run_after, now=now)
        delayed = due is not None and due > now
        rows.append(
            Delivery(
                message_id=message.message_id,
                handler=subscription.handler_path,
                message_type=message.message_name,
                payload=message.to_json(),
                queue=message.delivery_queue() or subscription.queue_name,
                priority=message.delivery_priority(),
                status=Delivery.Status.DELAYED if delayed else Delivery.Status.PENDING,
                run_after=due if delayed else None,
                task_id=str(uuid.uuid4()),
                sent_at=None if delayed else now,
                send_count=0 if delayed else 1,
                trace_context=trace_context or {},
                batch_id=batch_id,
                unique_key=key,
                unique_until=now + unique_window(subscription) if key else None,
            )
        )
    return rows


def deliveries_plan(
    message: Message,
    plan: list[Subscription],
    *,
    trace_context: dict[str, str] | None = None,
    run_after: datetime | None = None,
) -> list[Delivery]:
    """The unsaved Delivery rows of one message: pending (or delayed until ``run_after``) for each
    subscription in ``plan``, and for each whose predicate raised (``plan.failed``, see
    ``SubscriptionRegistry.async_wanted``) an unplanned row with the error, which the relay plans
    again."""
    rows = deliveries_build([(message, s) for s in plan], trace_context=trace_context, run_after=run_after)
    for subscription, exc in getattr(plan, "failed", ()):
        row = deliveries_build([(message, subscription)], trace_context=trace_context)[0]
        row.status = Delivery.Status.UNPLANNED
        row.send_count = 0
        row.attempts = 1
        row.last_error = f"predicate failed: {type(exc).__name__}: {exc}"[:2000]
        rows.append(row)
    return rows


def deliveries_to_send(rows: Iterable[Delivery]) -> list[Delivery]:
    """The rows of a plan that go to the broker now (not the unplanned ones)."""
    return [row for row in rows if row.status == Delivery.Status.PENDING]


def deliveries_record(plan: Iterable[tuple[Message, Subscription]]) -> list[Delivery]:
    """Record one pending Delivery per (message, subscription); return the rows to publish.

    A relayed message may have been recorded already: the first record wins. A unique job whose
    key is taken is dropped (or debounced) and not returned.
    """
    rows = deliveries_build(plan, trace_context=trace_context_capture())
    deliveries_insert([row for row in rows if not row.unique_key])
    unique = [row for row in rows if row.unique_key]
    if not unique:
        return rows
    with transaction.atomic():
        kept = {id(row) for row in deliveries_insert_unique(unique)}
    return [row for row in rows if not row.unique_key or id(row) in kept]


def deliveries_insert(rows: list[Delivery]) -> None:
    """Insert unsaved Delivery rows; a key recorded already keeps its first record."""
    if rows:
        Delivery.objects.bulk_create(rows, ignore_conflicts=True)


def deliveries_publish(rows: Iterable[Delivery]) -> None:
    """Publish a delivery task for each row over one pooled producer; DispatchError on failure.

    A pooled connection can be dead although the broker is back (a RabbitMQ restart leaves
    every idle connection broken), so a connection error is tried once more on a new pool:
    one attempt, no waiting, and a broker that is really down still fails at once.
    """
    rows = list(rows)
    try:
        _publish(rows)
    except Exception as first:
        _discard_producer_pool()
        try:
            _publish(rows)
        except Exception as exc:
            logger.warning("broker refused deliveries: %s", exc)
            raise DispatchError(str(exc)) from exc
        logger.info("published on a new broker connection after: %s", first)


def deliveries_publish_each(rows: Iterable[Delivery]) -> list[tuple[Delivery, Exception]]:
    """Publish ``rows``; a row the broker refuses for itself fails alone: return those, with why.

    DispatchError only when the broker itself is unavailable (then nothing is known to be sent).
    A whole batch goes first; if it fails for a reason other than the broker, each row is sent on
    its own, so one bad row (a queue that no longer exists, a payload that cannot be encoded)
    never holds back the others.
    """
    rows = list(rows)
    try:
        deliveries_publish(rows)
        return []
    except DispatchError as exc:
        if broker_unavailable(exc.__cause__):
            raise
    failed = []
    for row in rows:
        try:
            _publish([row])
        except Exception as exc:
            if broker_unavailable(exc):
                _discard_producer_pool()
                raise DispatchError(str(exc)) from exc
            logger.warning("delivery %s cannot be sent: %r", row.pk, exc)
            failed.append((row, exc))
    return failed


def deliveries_publish_released(rows: list[Delivery], *, give_back: Callable[[list[int]], int]) -> None:
    """Publish rows a relay pass has just released (committed as pending). When the broker is
    unavailable they are given back (``give_back(pks)``: waiting or delayed again) and
    DispatchError raised; a row the broker refuses for itself keeps the error, pending, and the
    sweeper sends it again, counting its failures, as for any delivery."""
    try:
        refused = deliveries_publish_each(rows)
    except DispatchError:
        give_back([row.pk for row in rows])
        raise
    for row, exc in refused:
        Delivery.objects.filter(pk=row.pk).update(last_error=f"send failed: {type(exc).__name__}: {exc}"[:2000])


def broker_unavailable(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the broker cannot take messages now (back off), rather than that one
    message is bad (skip it, record why, go on).

    Only errors a message makes itself count as bad rows: Celery refusing to route it (a queue
    missing from task_queues) and kombu or Python refusing to encode it. Anything else, the
    transport's connection errors included, is the broker's: a row is never blamed for an error
    that could be an outage.
    """
    if exc is None or isinstance(exc, (OSError, kombu_exceptions.OperationalError)):
        return True
    return not isinstance(exc, ROW_ERRORS)


def _publish(rows: list[Delivery]) -> None:
    app = current_app._get_current_object()
    # Several rows: one pipelined round trip per batch on Redis (kombu's Producer.batch; other
    # brokers publish each message as it comes). One row, the usual commit: a plain publish, as
    # building a Redis pipeline costs more CPU than the publish itself.
    with _producer_pool().acquire(block=True, timeout=5) as producer, _batch(producer, len(rows)):
        for row in rows:
            # Inside the registering span's context: the Celery instrumentation's publish span
            # and the task's run span join the request's trace, whoever sends and whenever.
            with trace_context_restored(row.trace_context):
                app.send_task(
                    DELIVER_TASK,
                    args=(row.payload, row.handler),
                    queue=row.queue,
                    task_id=row.task_id,
                    producer=producer,
                    retry=False,
                    ignore_result=True,
                    # From the delivery's creation (or due time): a re-send after an outage keeps
                    # the first deadline.
                    expires=queue_deadline(row.queue, since=row.run_after or row.created_at),
                    priority=None if row.priority is None else broker_priority(row.priority),
                    # What Flower and the results show; spares Celery a saferepr of the payload.
                    argsrepr=f"({row.message_type} {row.message_id}, {row.handler})",
                    kwargsrepr="{}",
                )


def _batch(producer: Producer, size: int) -> contextlib.AbstractContextManager:
    return producer.batch(max_size=PUBLISH_BATCH) if size > 1 else contextlib.nullcontext()


def _discard_producer_pool() -> None:
    global _pool  # noqa: PLW0603 (a per-process cache)
    if _pool is not None:
        with contextlib.suppress(Exception):
            _pool[1].connections.force_close_all()
    _pool = None
