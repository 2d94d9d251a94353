"""Depth and oldest-message age of the platform's queues, on Redis and on RabbitMQ.

Redis (kombu's redis transport): a queue is a list named after the queue, one list per
priority step (``priority_steps``, keys ``<queue>`` and ``<queue>\\x06\\x16<step>``, plus the
transport's ``global_keyprefix``). Messages are LPUSHed and BRPOPed from the right, so the
oldest message of each list is at index -1. The key names come from the channel itself
(``_q_for_pri``), never rebuilt here, so a different prefix or separator still matches. Age
comes from the ``x-sent-at`` header (``tasks.monitoring.publish_timestamps``); a message without it has
no known age.

RabbitMQ: depth is ``message_count`` of a passive ``queue_declare`` (no side effects). Age is
not reported (``None``): AMQP gives no way to look at a message without taking it, and the
management API, which could, is not enabled here. ``basic_get`` + ``reject(requeue=True)``
would move the message to the back of the line and bump its redelivered flag, so it is not used.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from celery import current_app
from kombu import Connection

from tasks.monitoring.publish_timestamps import SENT_AT_HEADER
from tasks.queues import QUEUES


class UnsupportedBroker(Exception):
    """The broker's transport is neither Redis nor AMQP."""


@dataclass(frozen=True)
class QueueStats:
    """One queue: messages waiting (not those a worker holds) and the oldest one's age."""

    name: str
    depth: int
    oldest_age_seconds: float | None
    """Seconds since the oldest waiting message was sent; None when empty or unknown."""
    consumers: int | None = None
    """Consumers the broker counts on the queue (RabbitMQ); None where it keeps no count (Redis)."""

    def as_dict(self) -> dict:
        return {"queue": self.name, "depth": self.depth, "oldest_age_seconds": self.oldest_age_seconds}


def queue_stats(queue_names: Sequence[str] = QUEUES, *, broker_url: str | None = None) -> list[QueueStats]:
    """Stats for each queue, read from the broker now. Raises on a broker error."""
    url = broker_url or current_app.conf.broker_url
    options = current_app.conf.broker_transport_options or {}
    with Connection(url, connect_timeout=3, transport_options=options) as conn:
        conn.ensure_connection(max_retries=0)  # one attempt: a monitoring read must not wait out retries
        driver = conn.transport.driver_type
        if driver == "redis":
            return [_redis_queue_stats(conn.default_channel, name) for name in queue_names]
        if driver == "amqp":
            return [_amqp_queue_stats(conn, name) for name in queue_names]
    raise UnsupportedBroker(f"queue stats are not implemented for the {driver!r} transport")


def _redis_queue_stats(channel, name: str) -> QueueStats:
    # One key per priority step; steps may map to the same key (step 0 is the bare name).
    keys = list(dict.fromkeys(channel._q_for_pri(name, step) for step in channel.priority_steps))
    with channel.client.pipeline() as pipe:
        for key in keys:
            pipe.llen(key)
            pipe.lindex(key, -1)
        replies = pipe.execute()
    depth = sum(replies[0::2])
    sent_times = [t for raw in replies[1::2] if raw is not None and (t := _sent_at(raw)) is not None]
    oldest_age = max(0.0, time.time() - min(sent_times)) if sent_times else None
    return QueueStats(name=name, depth=depth, oldest_age_seconds=oldest_age)


def _sent_at(raw: bytes) -> float | None:
    try:
        value = json.loads(raw).get("headers", {}).get(SENT_AT_HEADER)
        return float(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


def _amqp_queue_stats(conn: Connection, name: str) -> QueueStats:
    channel = conn.channel()
    try:
        _, message_count, consumer_count = channel.queue_declare(queue=name, passive=True)
    except conn.channel_errors:
        # 404: the queue was never declared, so nothing waits in it. The error closed the channel.
        return QueueStats(name=name, depth=0, oldest_age_seconds=None, consumers=0)
    else:
        channel.close()
    return QueueStats(name=name, depth=message_count, oldest_age_seconds=None, consumers=consumer_count)
