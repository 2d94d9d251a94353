"""What the broker still holds of our deliveries: the sweeper asks before it re-sends anything.

Redis (kombu's Redis transport) can be read without taking anything: a message the broker holds
is either waiting in its queue's list (one list per priority step: ``<queue>`` and
``<queue>\\x06\\x16<step>``) or reserved by a worker, in the ``unacked`` hash (value
``[message, exchange, routing_key]``), from where kombu restores it after the visibility timeout
if its worker dies. A message is a JSON envelope whose ``headers.id`` is the Celery task id,
which is the ``task_id`` of its Delivery row. The key names, separator, priority steps and key
prefix come from kombu's channel itself (``_q_for_pri``, ``unacked_key``), never rebuilt here.
Lists and hash are read in one MULTI, so a message moving from one to the other is seen in one.

RabbitMQ cannot be peeked: a passive ``queue_declare`` gives the count of ready messages only
(not those delivered to a consumer and still unacknowledged).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from celery import current_app
from kombu import Connection

REDIS = "redis"
AMQP = "amqp"


def broker_connection() -> Connection:
    """A connection to the task broker; it connects at its first use and never retries."""
    app = current_app._get_current_object()
    return app.connection_for_write(transport_options=app.conf.broker_transport_options)


def broker_driver(connection: Connection) -> str:
    """``"redis"``, ``"amqp"`` or another kombu driver name."""
    return connection.transport.driver_type


def broker_held_task_ids(connection: Connection, queues: Iterable[str]) -> set[str]:
    """Task ids of every message waiting in ``queues`` or reserved by any worker (Redis only).

    One MULTI of LRANGE per priority list plus HVALS of the unacked hash: an atomic picture, so a
    message popped by a worker between two reads cannot look absent in both.
    """
    channel = connection.default_channel
    keys = list(dict.fromkeys(channel._q_for_pri(q, step) for q in queues for step in channel.priority_steps))
    with channel.client.pipeline(transaction=True) as pipe:
        for key in keys:
            pipe.lrange(key, 0, -1)
        pipe.hvals(channel.unacked_key)
        *lists, unacked = pipe.execute()
    held = {_task_id(raw) for raws in lists for raw in raws}
    held.update(_task_id(raw, reserved=True) for raw in unacked)
    held.discard(None)
    return held


def broker_queue_lengths(connection: Connection, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each queue, all priority lists together (Redis only)."""
    channel = connection.default_channel
    keys = {q: list(dict.fromkeys(channel._q_for_pri(q, step) for step in channel.priority_steps)) for q in queues}
    with channel.client.pipeline() as pipe:
        for queue_keys in keys.values():
            for key in queue_keys:
                pipe.llen(key)
        lengths = iter(pipe.execute())
    return {q: sum(next(lengths) for _ in queue_keys) for q, queue_keys in keys.items()}


def _task_id(raw: bytes, *, reserved: bool = False) -> str | None:
    # Broker data is untrusted: a message we cannot read holds no delivery of ours.
    try:
        envelope = json.loads(raw)
        if reserved:
            envelope = envelope[0]
        task_id = envelope.get("headers", {}).get("id") or envelope.get("properties", {}).get("correlation_id")
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return None
    return str(task_id) if task_id else None


def broker_ready_counts(connection: Connection, queues: Iterable[str]) -> dict[str, int]:
    """Messages ready (not delivered to a consumer) in each queue, by a passive queue_declare."""
    counts = {}
    for queue in queues:
        channel = connection.channel()
        try:
            _, count, _ = channel.queue_declare(queue=queue, passive=True)
        except connection.channel_errors:
            count = 0  # never declared: nothing waits in it (the error closed the channel)
        else:
            channel.close()
        counts[queue] = count
    return counts
