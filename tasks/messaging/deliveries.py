"""Sending async deliveries to Celery: record each one, then publish it, without blocking.

Each (message, handler) pair is recorded as a ``Delivery`` row before its task is published,
so a message that never reaches a worker (broker down, or a worker killed in the moment
between kombu taking a message off a Redis list and recording it as unacknowledged) is still
known, and the sweeper (``tasks.reliability.sweeper``) sends it again. Handlers are idempotent per
(message_id, handler), so a second send is harmless.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from collections.abc import Iterable

from celery import current_app
from django.db import transaction
from django.utils import timezone
from kombu import Producer
from kombu.pools import ProducerPool

from tasks.messages import Message
from tasks.messaging.subscriptions import Subscription
from tasks.models import Delivery

logger = logging.getLogger(__name__)

# The deliver task is sent by name: it is defined in tasks.reliability, which builds on this module.
DELIVER_TASK = "tasks.deliver"
PUBLISH_BATCH = 500


class DispatchError(RuntimeError):
    """The broker could not take the messages; they stay recorded for the relay or sweeper."""


_pool: tuple[int, ProducerPool] | None = None


def _producer_pool() -> ProducerPool:
    """A producer pool whose connections never retry: publishing happens in a commit hook or a
    request, which must return at once when the broker is down (the outbox keeps the event).

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


def deliveries_build(plan: Iterable[tuple[Message, Subscription]]) -> list[Delivery]:
    """One pending, unsaved Delivery per (message, subscription)."""
    now = timezone.now()
    return [
        Delivery(
            message_id=message.message_id,
            handler=subscription.handler_path,
            message_type=message.message_name,
            payload=message.to_json(),
            queue=subscription.queue_name,
            task_id=str(uuid.uuid4()),
            sent_at=now,
            send_count=1,
        )
        for message, subscription in plan
    ]


def deliveries_record(plan: Iterable[tuple[Message, Subscription]]) -> list[Delivery]:
    """Record one pending Delivery per (message, subscription); return the rows to publish.

    A relayed message may have been recorded already: the first record wins.
    """
    rows = deliveries_build(plan)
    if rows:
        Delivery.objects.bulk_create(rows, ignore_conflicts=True)
    return rows


def deliveries_record_and_publish(plan: Iterable[tuple[Message, Subscription]]) -> int:
    """Record and publish one delivery task per (message, subscription); return how many.

    The records commit before the tasks are published, so a worker always finds its row;
    inside a transaction the publishing waits for the commit. Raises DispatchError when the
    broker refuses; the rows stay pending and the sweeper sends them again.
    """
    rows = deliveries_record(plan)
    if not rows:
        return 0
    connection = transaction.get_connection()
    if connection.in_atomic_block:
        transaction.on_commit(functools.partial(_publish_logging_errors, rows))
    else:
        deliveries_publish(rows)
    return len(rows)


def _publish_logging_errors(rows: list[Delivery]) -> None:
    # Logged in deliveries_publish; the sweeper re-sends the pending rows.
    with contextlib.suppress(DispatchError):
        deliveries_publish(rows)


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


def _publish(rows: list[Delivery]) -> None:
    app = current_app._get_current_object()
    # Several rows: one pipelined round trip per batch on Redis (kombu's Producer.batch; other
    # brokers publish each message as it comes). One row, the usual commit: a plain publish, as
    # building a Redis pipeline costs more CPU than the publish itself.
    with _producer_pool().acquire(block=True, timeout=5) as producer, _batch(producer, len(rows)):
        for row in rows:
            app.send_task(
                DELIVER_TASK,
                args=(row.payload, row.handler),
                queue=row.queue,
                task_id=row.task_id,
                producer=producer,
                retry=False,
                ignore_result=True,
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
