"""What operators see of RabbitMQ stream consumers: each watched consumer queue and its DLQ.

A consumer queue belongs to the consuming service (``RabbitMQConsumer`` names it after its
group, with ``<queue>.dead`` beside it), and RabbitMQ offers no listing over AMQP, so the queues
watched are the ones ``STREAMS_RABBITMQ_WATCHED_QUEUES`` names. Counts come from a passive
``queue_declare`` (no side effects); a queue that does not exist counts as empty and is marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from django.conf import settings
from kombu import Connection


@dataclass(frozen=True)
class ConsumerQueueStats:
    """One consumer queue: messages waiting, consumers attached, messages in its DLQ."""

    name: str
    messages: int
    consumers: int
    dead_letters: int
    exists: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _declared(conn: Connection, name: str) -> tuple[int, int] | None:
    """(messages, consumers) of a queue, or None when it does not exist."""
    channel = conn.channel()
    try:
        _, messages, consumers = channel.queue_declare(queue=name, passive=True)
    except conn.channel_errors:
        return None  # 404; the error closed the channel
    channel.close()
    return int(messages), int(consumers)


def consumer_queue_stats(
    queues: Sequence[str] | None = None, *, url: str | None = None, timeout: float = 3.0
) -> list[ConsumerQueueStats]:
    """Stats of the watched consumer queues (``STREAMS_RABBITMQ_WATCHED_QUEUES`` by default).
    Raises on a broker error; an empty list without connecting when none are watched."""
    queues = list(settings.STREAMS_RABBITMQ_WATCHED_QUEUES if queues is None else queues)
    if not queues:
        return []
    found = []
    with Connection(url or settings.STREAMS_RABBITMQ_URL, connect_timeout=timeout) as conn:
        conn.ensure_connection(max_retries=1)
        for name in queues:
            queue = _declared(conn, name)
            dead = _declared(conn, f"{name}.dead")
            found.append(
                ConsumerQueueStats(
                    name=name,
                    messages=queue[0] if queue else 0,
                    consumers=queue[1] if queue else 0,
                    dead_letters=dead[0] if dead else 0,
                    exists=queue is not None,
                )
            )
    return found
