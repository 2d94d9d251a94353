"""Where a stream's entries go: one ``StreamSink`` interface, a Redis Streams sink and a RabbitMQ sink.

``sink_for(stream)`` picks the sink the settings name for a stream (``STREAMS_SINKS``, else
``STREAMS_DEFAULT_SINK``). A sink's ``append`` takes one stream's next entries in position order
and returns only when the broker holds every one of them, or raises ``StreamSinkUnavailable``;
it is called again with the same entries after a crash, so it must recognise (Redis) or tolerate
(RabbitMQ: consumers drop copies by ``message_id``) an entry appended before.

Kafka fits the same interface (README "Consuming events from another service"): a topic per
family, the key as the record key (per-partition order), an idempotent producer with
``acks=all``, ``append`` returning once every record is acknowledged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import redis
from django.conf import settings
from kombu import Connection, Exchange, Producer

from tasks.messaging.deliveries import DispatchError
from tasks.models import StreamEntry
from tasks.streams.entries import entry_fields, exchange_name, routing_key


class StreamSinkUnavailable(DispatchError):
    """The sink's broker could not take the entries: they stay unappended for the next pass."""


class StreamConflict(RuntimeError):
    """The stream holds something other than what the relay appended (another writer, a restore)."""


class StreamSink(Protocol):
    name: str

    def append(self, stream: str, entries: Sequence[StreamEntry]) -> None:
        """Hand ``entries`` (one stream's, in position order) to the broker; return once it holds them."""
        ...


def fields_of(entry: StreamEntry) -> dict[str, str]:
    """The wire fields of an entry (``tasks.streams.entries``)."""
    payload = entry.payload
    return entry_fields(
        message_id=str(entry.message_id),
        type=entry.message_type,
        occurred_at=payload["data"]["occurred_at"],
        key=entry.key,
        payload=payload["data"],
        schema_version=payload.get("schema_version", 1),
    )


class RedisStreamSink:
    """``XADD`` with the entry's own id (``<ms>-<seq>``, increasing with its position), so an entry
    appended before a crash is refused by Redis when appended again: the relay recognises it
    (and checks it is the same event) instead of appending it twice. Retention: ``MAXLEN ~`` or,
    with ``STREAMS_REDIS_MAX_AGE``, ``MINID ~``. The stream's key is the stream's name."""

    name = "redis"

    def __init__(self, url: str | None = None) -> None:
        self.client = redis.Redis.from_url(
            url or settings.STREAMS_REDIS_URL, socket_timeout=10, socket_connect_timeout=5
        )

    def _retention(self) -> dict[str, object]:
        if settings.STREAMS_REDIS_MAX_AGE:
            oldest_ms = int((time.time() - settings.STREAMS_REDIS_MAX_AGE) * 1000)
            return {"minid": f"{oldest_ms}-0", "approximate": True}
        return {"maxlen": settings.STREAMS_REDIS_MAXLEN, "approximate": True}

    def append(self, stream: str, entries: Sequence[StreamEntry]) -> None:
        retention = self._retention()
        try:
            pipe = self.client.pipeline(transaction=False)
            for entry in entries:
                pipe.xadd(stream, fields_of(entry), id=entry.entry_id, **retention)
            replies = pipe.execute(raise_on_error=False)
            for entry, reply in zip(entries, replies, strict=True):
                if isinstance(reply, redis.ResponseError) and "equal or smaller" in str(reply):
                    self._check_appended_before(stream, entry)
                elif isinstance(reply, Exception):
                    raise reply
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StreamSinkUnavailable(f"Redis stream {stream}: {exc}") from exc

    def _check_appended_before(self, stream: str, entry: StreamEntry) -> None:
        """An id at or below the stream's top: the entry itself (appended before the relay could
        record it), or one trimmed since by retention. Anything else is a conflict."""
        found = self.client.xrange(stream, min=entry.entry_id, max=entry.entry_id, count=1)
        if found:
            fields = found[0][1]
            if fields.get(b"message_id", b"").decode() == str(entry.message_id):
                return
            raise StreamConflict(f"{stream} {entry.entry_id} holds another event than {entry.message_id}")
        first = self.client.xinfo_stream(stream).get("first-entry")
        if first is None or _id_tuple(first[0]) > _id_tuple(entry.entry_id):
            return  # trimmed by retention after it was appended
        raise StreamConflict(
            f"{stream} is past {entry.entry_id} without it: something else appends to the relay's stream"
        )


def _id_tuple(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class RabbitMQSink:
    """Persistent messages on the stream family's durable topic exchange (``<family>.events``),
    routing key ``<stream>.<key>``, published with confirms. An append repeated after a crash
    publishes a copy with the same ``message_id``, which consumers drop."""

    name = "rabbitmq"

    def __init__(self, url: str | None = None) -> None:
        self.connection = Connection(
            url or settings.STREAMS_RABBITMQ_URL, transport_options={"confirm_publish": True}, connect_timeout=5
        )
        self._declared: set[str] = set()

    def append(self, stream: str, entries: Sequence[StreamEntry]) -> None:
        exchange = Exchange(exchange_name(stream), "topic", durable=True)
        try:
            self.connection.ensure_connection(max_retries=1)
            producer = Producer(self.connection.default_channel)
            if exchange.name not in self._declared:
                exchange.declare(channel=self.connection.default_channel)
                self._declared.add(exchange.name)
            for entry in entries:
                fields = fields_of(entry)
                body = {**fields, "payload": entry.payload["data"], "schema_version": int(fields["schema_version"])}
                producer.publish(
                    json.dumps(body, separators=(",", ":")).encode(),
                    exchange=exchange,
                    routing_key=routing_key(stream, entry.key),
                    delivery_mode=2,
                    content_type="application/json",
                    content_encoding="utf-8",
                    message_id=fields["message_id"],
                    # An event starts its own conversation: replies and follow-ups carry its id.
                    correlation_id=fields["message_id"],
                    timestamp=int(datetime.fromisoformat(fields["occurred_at"]).timestamp()),
                    type=entry.message_type,
                    headers={"key": entry.key, "stream": stream, "position": entry.position},
                    retry=False,
                )
        except self.connection.connection_errors as exc:
            self.connection.close()
            self._declared.clear()
            raise StreamSinkUnavailable(f"RabbitMQ stream {stream}: {exc}") from exc


_sinks: dict[str, StreamSink] = {}


def sink_for(stream: str) -> StreamSink:
    """The sink the settings name for ``stream``: one per kind per process, made on first use."""
    kind = settings.STREAMS_SINKS.get(stream, settings.STREAMS_DEFAULT_SINK)
    if kind not in _sinks:
        _sinks[kind] = RedisStreamSink() if kind == "redis" else RabbitMQSink()
    return _sinks[kind]


def sinks_reset() -> None:
    """Forget this process's sinks (tests that change the URLs in settings)."""
    _sinks.clear()
