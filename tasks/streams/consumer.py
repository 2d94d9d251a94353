"""A consumer library for the platform's event streams, for any Python service: no Django import.

It needs redis-py for Redis Streams and kombu for RabbitMQ, and ``entries.py`` beside it (copy
both files, or install this repository's ``tasks`` package without configuring Django).

```python
import redis
from tasks.streams.consumer import RedisStreamConsumer

def handle(event):              # a StreamEvent: message_id, type, occurred_at, key, payload, ...
    index_component(event.payload["component_id"])

consumer = RedisStreamConsumer(
    redis.Redis.from_url("redis://events-host:6379/0"),
    stream="marketplace.components", group="search", consumer="search-1", handler=handle,
)
consumer.run()                  # until stop() (e.g. from a SIGTERM handler)
```

Both consumers give each entry to ``handler`` at least once per group, acknowledge it only after
``handler`` returned, and remember the ``message_id`` first (``seen``), so a copy of an event
already handled (a redelivery after a lost ack, a re-published AMQP message) is acknowledged
without running ``handler`` again. An entry whose handler raised is delivered again; one
delivered ``max_deliveries`` times without an ack (it raised, or its consumer died each time) goes
to a dead-letter stream or queue with its last error. A malformed entry goes there at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message as AmqpMessage

from tasks.streams.entries import MalformedEntry, StreamEvent, event_from_fields, exchange_name

__all__ = [
    "MemorySeen",
    "RabbitMQConsumer",
    "RedisSeen",
    "RedisStreamConsumer",
    "SeenStore",
    "StreamEvent",
    "retry_stream_name",
]

logger = logging.getLogger(__name__)

Handler = Callable[[StreamEvent], object]
DEAD_LETTER_MAXLEN = 100_000


class SeenStore(Protocol):
    """What a consumer remembers per group: handled message ids and deliveries per message id."""

    def seen(self, message_id: str) -> bool: ...

    def remember(self, message_id: str) -> None: ...

    def seen_many(self, message_ids: list[str]) -> list[bool]:
        """``seen`` of each, at once (one round trip where the store is remote)."""
        ...

    def count_delivery(self, message_id: str) -> int:
        """Count one more delivery of ``message_id`` and return the count (RabbitMQ classic queues)."""
        ...


class MemorySeen:
    """The last ``size`` message ids of one process: enough for one consumer process alone."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._deliveries: OrderedDict[str, int] = OrderedDict()

    def seen(self, message_id: str) -> bool:
        return message_id in self._seen

    def seen_many(self, message_ids: list[str]) -> list[bool]:
        return [self.seen(message_id) for message_id in message_ids]

    def remember(self, message_id: str) -> None:
        self._seen[message_id] = None
        self._deliveries.pop(message_id, None)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)

    def count_delivery(self, message_id: str) -> int:
        count = self._deliveries.pop(message_id, 0) + 1
        self._deliveries[message_id] = count
        while len(self._deliveries) > self.size:
            self._deliveries.popitem(last=False)
        return count


class RedisSeen:
    """Message ids in Redis under ``namespace`` for ``ttl`` seconds (at least): shared by a group's
    consumers.

    Ids go into one set per time bucket (``<namespace>:seen:<bucket>``, ``BUCKETS`` buckets span
    ``ttl``), each expiring once its ids are older than ``ttl``: a batch of ids is looked up with
    one ``SMISMEMBER`` per bucket and remembered with one ``SADD``, not a key per id, so the
    bookkeeping of a batch costs a few commands whatever its size.
    """

    BUCKETS = 8

    def __init__(self, client: redis.Redis, *, namespace: str, ttl: int = 7 * 86400) -> None:
        self.client = client
        self.namespace = namespace
        self.ttl = ttl
        self.width = max(1, -(-ttl // self.BUCKETS))  # seconds per bucket, rounded up

    def _bucket(self, at: float) -> int:
        return int(at // self.width)

    def _live_buckets(self) -> list[str]:
        # The current bucket and every earlier one that can still hold an id younger than ttl.
        now = self._bucket(time.time())
        return [f"{self.namespace}:seen:{b}" for b in range(now - self.BUCKETS, now + 1)]

    def seen(self, message_id: str) -> bool:
        return self.seen_many([message_id])[0]

    def seen_many(self, message_ids: list[str]) -> list[bool]:
        pipe = self.client.pipeline(transaction=False)
        for key in self._live_buckets():
            pipe.smismember(key, message_ids)
        found = [False] * len(message_ids)
        for flags in pipe.execute():
            found = [was or bool(flag) for was, flag in zip(found, flags, strict=True)]
        return found

    def remember(self, message_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        self.remember_in(pipe, [message_id])
        pipe.delete(f"{self.namespace}:deliveries:{message_id}")
        pipe.execute()

    def remember_in(self, pipe: Any, message_ids: list[str]) -> None:
        """Queue ``remember`` of ``message_ids`` on ``pipe``: it commits with what else it holds."""
        now = time.time()
        key = f"{self.namespace}:seen:{self._bucket(now)}"
        pipe.sadd(key, *message_ids)
        # The bucket's newest id may be added at its very end: keep it ttl past that.
        pipe.expireat(key, int((self._bucket(now) + 1) * self.width + self.ttl))

    def count_delivery(self, message_id: str) -> int:
        key = f"{self.namespace}:deliveries:{message_id}"
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, self.ttl)
        return int(pipe.execute()[0])


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class _Loop:
    """Stop handling shared by both consumers."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def stop(self, *_: object) -> None:
        """Finish the entry in hand, then return from ``run``."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()


class RedisStreamConsumer(_Loop):
    """One consumer of a Redis consumer group.

    Each ``poll``: take over (``XAUTOCLAIM``) entries pending longer than ``claim_idle`` seconds
    in any consumer of the group (a dead or hung one), then read new ones (``XREADGROUP``); handle
    each, ``XACK`` after the handler. The group is created on first use (``start_id`` "0": from
    the oldest entry the stream keeps; "$": only what comes after).
    Dead letters go to ``<stream>:dead:<group>`` with the entry's fields and ``error``,
    ``entry_id``, ``deliveries``, ``consumer`` and ``dead_at``. The consumer also reads the
    group's retry stream ``<stream>:retry:<group>``, where an operator re-appends dead letters
    (``tasks.streams.dead_letters``): the relay's stream takes entries from the relay alone.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        handler: Handler,
        claim_idle: float = 30.0,
        max_deliveries: int = 5,
        batch: int = 10,
        block: float = 1.0,
        start_id: str = "0",
        seen: SeenStore | None = None,
        seen_ttl: int = 7 * 86400,
        dead_letter_stream: str | None = None,
    ) -> None:
        super().__init__()
        if max_deliveries < 1 or batch < 1 or claim_idle <= 0:
            raise ValueError("max_deliveries and batch must be 1 or more, claim_idle above 0")
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.claim_idle_ms = int(claim_idle * 1000)
        self.max_deliveries = max_deliveries
        self.batch = batch
        self.block_ms = int(block * 1000)
        self.start_id = start_id
        self.seen = seen if seen is not None else RedisSeen(client, namespace=f"{stream}:{group}", ttl=seen_ttl)
        self.dead_letter_stream = dead_letter_stream or f"{stream}:dead:{group}"
        self.retry_stream = retry_stream_name(stream=stream, group=group)
        self._claim_from: dict[str, str] = {}

    @property
    def sources(self) -> tuple[str, str]:
        """The streams this consumer reads: the stream, and its group's retry stream."""
        return (self.stream, self.retry_stream)

    def _errors_key(self, source: str) -> str:
        return f"{source}:{self.group}:errors"

    def ensure_group(self) -> None:
        """Create the group (and the streams) unless it exists: any number of consumers may call it."""
        for source, start in ((self.stream, self.start_id), (self.retry_stream, "0")):
            try:
                self.client.xgroup_create(source, self.group, id=start, mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def poll(self) -> int:
        """Claim, read and handle one batch; return how many entries were handled or dead-lettered."""
        done = 0
        claimed = [(source, *entry) for source in self.sources for entry in self._claim(source)]
        for source, entry_id, fields, deliveries in claimed:
            done += self._handle(source, entry_id, fields, deliveries)
        if self.stopping:
            return done
        # Claimed work was found: look again soon instead of blocking on new entries.
        reply = self.client.xreadgroup(
            self.group,
            self.consumer,
            dict.fromkeys(self.sources, ">"),
            count=self.batch,
            block=None if claimed else self.block_ms,
        )
        for source, entries in reply or []:
            done += self._handle_batch(_text(source), entries)
        return done

    def _handle_batch(self, source: str, entries: list[tuple[Any, Any]]) -> int:
        """Handle entries read for the first time, with a batch's round trips: one look for copies
        handled before, one MULTI that marks the handled ones seen and acknowledges them (and the
        copies). An entry whose handler raised is left pending, as ``_handle`` leaves it.

        What a consumer handled and then died before acknowledging is claimed and handled again
        by another (at least once); a copy of an acknowledged event is dropped by its message id.
        """
        parsed = [(entry_id, fields, self._parse(source, entry_id, fields, 1)) for entry_id, fields in entries]
        events = [(entry_id, fields, event) for entry_id, fields, event in parsed if event is not None]
        copies = self.seen.seen_many([event.message_id for _, _, event in events]) if events else []
        done = len(parsed) - len(events)  # settled by _parse (gone, malformed)
        settled, handled, handled_ids = [], [], set()
        for (entry_id, fields, event), copy in zip(events, copies, strict=True):
            if self.stopping:
                break  # read but not handled: it stays pending and is claimed after claim_idle
            if copy or event.message_id in handled_ids:
                settled.append(entry_id)  # handled before, or earlier in this batch
                done += 1
            elif self._run_handler(source, entry_id, fields, event, 1):
                handled.append((entry_id, event.message_id))
                handled_ids.add(event.message_id)
                done += 1
            elif self.max_deliveries == 1:
                done += 1  # dead-lettered at once
        if settled or handled:
            pipe = self.client.pipeline(transaction=True)
            if handled:
                self._remember_in(pipe, [message_id for _, message_id in handled])
            ids = settled + [entry_id for entry_id, _ in handled]
            pipe.xack(source, self.group, *ids)
            pipe.hdel(self._errors_key(source), *ids)
            pipe.execute()
        return done

    def run(self) -> None:
        """Poll until ``stop()``; a lost Redis is retried with backoff, never the end of the loop."""
        backoff = 0.0
        while not self.stopping:
            try:
                self.ensure_group()
                while not self.stopping:
                    self.poll()
                    backoff = 0.0
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                backoff = min(max(backoff * 2, 0.5), 10.0)
                logger.warning("stream %s: Redis unavailable (%s); retrying in %.1f s", self.stream, exc, backoff)
                self._stop.wait(backoff)

    def _claim(self, source: str) -> list[tuple[Any, Any, int]]:
        next_from, entries, *deleted = self.client.xautoclaim(
            source,
            self.group,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id=self._claim_from.get(source, "0-0"),
            count=self.batch,
        )
        self._claim_from[source] = next_from
        if deleted and deleted[0]:
            # Trimmed away (retention) while pending: Redis dropped them from the group already.
            logger.warning("stream %s: %d pending entries were trimmed before handled", source, len(deleted[0]))
        if not entries:
            return []
        # Each claimed entry's delivery count, in one round trip (XAUTOCLAIM has just raised it).
        pipe = self.client.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(source, self.group, min=entry_id, max=entry_id, count=1)
        mine = self.consumer.encode()
        counts = {
            rows[0]["message_id"]: rows[0]["times_delivered"]
            for rows in pipe.execute()
            if rows and rows[0]["consumer"] in (mine, self.consumer)
        }
        # An entry no longer pending in this consumer's name (another claimed or acked it since) is not ours.
        return [(entry_id, fields, counts[entry_id]) for entry_id, fields in entries if entry_id in counts]

    def _handle(self, source: str, entry_id: Any, fields: Mapping[Any, Any] | None, deliveries: int) -> int:
        event = self._parse(source, entry_id, fields, deliveries)
        if event is None:
            return 1
        if self.seen.seen(event.message_id):
            self._ack(source, entry_id)
            return 1
        if not self._run_handler(source, entry_id, fields, event, deliveries):
            return 1 if deliveries >= self.max_deliveries else 0  # dead-lettered, or left pending
        pipe = self.client.pipeline(transaction=True)
        self._remember_in(pipe, [event.message_id])
        pipe.xack(source, self.group, entry_id)
        pipe.hdel(self._errors_key(source), entry_id)
        pipe.execute()
        return 1

    def _run_handler(
        self, source: str, entry_id: Any, fields: Mapping[Any, Any], event: StreamEvent, deliveries: int
    ) -> bool:
        """True if the handler returned. If it raised, the entry stays pending with its error
        (claimed again after claim_idle), or goes to the dead-letter stream at the cap."""
        try:
            self.handler(event)
        except Exception as exc:
            error = _error_text(exc)
            logger.warning(
                "stream %s group %s: handler failed on %s (delivery %d): %s",
                source, self.group, event.entry_id, deliveries, error,
            )  # fmt: skip
            if deliveries >= self.max_deliveries:
                self._dead_letter(source, entry_id, fields, deliveries, error)
            else:
                self.client.hset(self._errors_key(source), event.entry_id, error)
            return False
        return True

    def _remember_in(self, pipe: Any, message_ids: list[str]) -> None:
        remember_in = getattr(self.seen, "remember_in", None)
        if remember_in is not None:
            remember_in(pipe, message_ids)  # in the same MULTI as the ack
        else:
            for message_id in message_ids:
                self.seen.remember(message_id)

    def _parse(
        self, source: str, entry_id: Any, fields: Mapping[Any, Any] | None, deliveries: int
    ) -> StreamEvent | None:
        """The event to consider, or None when the entry was settled here: gone (acked),
        malformed or over the cap (dead-lettered)."""
        entry = _text(entry_id)
        if fields is None:
            self._ack(source, entry_id)
            return None
        try:
            event = event_from_fields(fields, stream=self.stream, entry_id=entry, deliveries=deliveries)
        except MalformedEntry as exc:
            self._dead_letter(source, entry_id, fields, deliveries, f"malformed entry: {exc}")
            return None
        if deliveries > self.max_deliveries:
            error = self.client.hget(self._errors_key(source), entry)
            reason = error.decode() if isinstance(error, bytes) else "no error recorded"
            self._dead_letter(
                source, entry_id, fields, deliveries,
                f"delivered {deliveries - 1} times without an ack (last error: {reason}; a consumer that died "
                f"or hung handling it leaves no error)",
            )  # fmt: skip
            return None
        return event

    def _ack(self, source: str, entry_id: Any) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(source, self.group, entry_id)
        pipe.hdel(self._errors_key(source), entry_id)
        pipe.execute()

    def _dead_letter(self, source: str, entry_id: Any, fields: Mapping[Any, Any], deliveries: int, error: str) -> None:
        entry = _text(entry_id)
        logger.error("stream %s group %s: entry %s dead-lettered: %s", source, self.group, entry, error)
        dead = {**fields}
        dead.update(
            error=error,
            entry_id=entry,
            deliveries=str(deliveries),
            consumer=self.consumer,
            dead_at=datetime.now(UTC).isoformat(),
        )
        # One MULTI: the dead letter exists exactly when the entry is no longer pending.
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.dead_letter_stream, dead, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        pipe.xack(source, self.group, entry_id)
        pipe.hdel(self._errors_key(source), entry)
        pipe.execute()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def retry_stream_name(*, stream: str, group: str) -> str:
    """The stream ``group``'s consumers read besides ``stream``: dead letters handed back to it."""
    return f"{stream}:retry:{group}"


class RabbitMQConsumer(_Loop):
    """One consumer of a group's durable queue on the stream family's topic exchange.

    The queue ``<stream>.<group>`` is bound with ``<stream>.#``; its dead-letter exchange
    ``<queue>.dlx`` routes to ``<queue>.dead`` (the DLQ). Messages the queue's TTL expires go there
    (``x-death`` reason ``expired``), and so do messages this consumer gives up on: a handler
    that raised ``max_deliveries`` times or a consumer that died that often (a quorum queue's
    ``x-delivery-count``, else ``seen.count_delivery``), with the error in ``x-error``. Manual
    acks; ``prefetch`` messages in flight.
    """

    def __init__(
        self,
        connection: Connection | str,
        *,
        stream: str,
        group: str,
        handler: Handler,
        max_deliveries: int = 5,
        prefetch: int = 10,
        message_ttl: int = 0,
        max_priority: int = 0,
        quorum: bool = False,
        seen: SeenStore | None = None,
    ) -> None:
        super().__init__()
        if quorum and max_priority:
            raise ValueError("a quorum queue has no x-max-priority; use a classic queue for priorities")
        if isinstance(connection, str):
            # Publisher confirms: a dead letter is acknowledged by the broker before its message is.
            connection = Connection(connection, transport_options={"confirm_publish": True})
        self.connection = connection
        self.stream = stream
        self.group = group
        self.handler = handler
        self.max_deliveries = max_deliveries
        self.prefetch = prefetch
        self.seen = seen if seen is not None else MemorySeen()
        self.queue_name = f"{stream}.{group}"
        self.exchange = Exchange(exchange_name(stream), "topic", durable=True)
        self.dead_exchange = Exchange(f"{self.queue_name}.dlx", "direct", durable=True)
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": self.dead_exchange.name,
            "x-dead-letter-routing-key": self.queue_name,
        }
        if message_ttl:
            arguments["x-message-ttl"] = message_ttl
        if max_priority:
            arguments["x-max-priority"] = max_priority
        queue_type = {"x-queue-type": "quorum"} if quorum else {}
        self.queue = Queue(
            self.queue_name, self.exchange, routing_key=f"{stream}.#", durable=True,
            queue_arguments={**arguments, **queue_type},
        )  # fmt: skip
        self.dead_letter_queue = Queue(
            f"{self.queue_name}.dead", self.dead_exchange, routing_key=self.queue_name, durable=True,
            queue_arguments=queue_type,
        )  # fmt: skip

    def declare(self) -> None:
        """Declare the exchange, the queue, its DLX and DLQ (idempotent; the arguments must not change)."""
        with self.connection.channel() as channel:
            self.queue.bind(channel).declare()
            self.dead_letter_queue.bind(channel).declare()

    def run(self) -> None:
        """Consume until ``stop()``; a lost connection is retried with backoff. Closes the connection
        when it returns, so the broker requeues the prefetched messages not acknowledged."""
        backoff = 0.0
        while not self.stopping:
            try:
                self.declare()
                with Consumer(
                    self.connection, queues=[self.queue], on_message=self._on_message, prefetch_count=self.prefetch,
                    accept=["application/json"],
                ):  # fmt: skip
                    while not self.stopping:
                        # TimeoutError (socket.timeout): nothing arrived within the second.
                        with contextlib.suppress(TimeoutError):
                            self.connection.drain_events(timeout=1)
                        backoff = 0.0
            except self.connection.connection_errors as exc:
                backoff = min(max(backoff * 2, 0.5), 10.0)
                logger.warning("stream %s: RabbitMQ unavailable (%s); retrying in %.1f s", self.stream, exc, backoff)
                self.connection.close()
                self._stop.wait(backoff)
        self.connection.close()

    def _deliveries(self, message: AmqpMessage, message_id: str) -> int:
        header = (message.headers or {}).get("x-delivery-count")
        if isinstance(header, int) and not isinstance(header, bool):
            return header + 1
        counted = self.seen.count_delivery(message_id)
        return max(counted, 2) if message.delivery_info.get("redelivered") else counted

    def _on_message(self, message: AmqpMessage) -> None:
        entry = str(message.delivery_tag)
        try:
            if message.content_type != "application/json":
                raise MalformedEntry(f"content type {message.content_type!r}, not application/json")
            body = json.loads(message.body)
            if not isinstance(body, dict):
                raise MalformedEntry("body is not a JSON object")
            event = event_from_fields(body, stream=self.stream, entry_id=entry, deliveries=1)
        except (MalformedEntry, ValueError) as exc:
            self._dead_letter(message, f"malformed message: {exc}", 1)
            return
        deliveries = self._deliveries(message, event.message_id)
        if deliveries > self.max_deliveries:
            self._dead_letter(message, f"delivered {deliveries - 1} times without an ack", deliveries)
            return
        if self.seen.seen(event.message_id):
            message.ack()
            return
        try:
            self.handler(
                StreamEvent(**{**event.__dict__, "deliveries": deliveries})  # the count known only now
            )
        except Exception as exc:
            error = _error_text(exc)
            logger.warning(
                "stream %s group %s: handler failed (delivery %d): %s", self.stream, self.group, deliveries, error
            )
            if deliveries >= self.max_deliveries:
                self._dead_letter(message, error, deliveries)
            else:
                message.requeue()
            return
        self.seen.remember(event.message_id)
        message.ack()

    def _dead_letter(self, message: AmqpMessage, error: str, deliveries: int) -> None:
        logger.error("stream %s group %s: message dead-lettered: %s", self.stream, self.group, error)
        headers = {**(message.headers or {}), "x-error": error, "x-deliveries": deliveries}
        properties = {k: v for k, v in message.properties.items() if k not in ("application_headers", "delivery_mode")}
        Producer(message.channel).publish(
            message.body,
            exchange=self.dead_exchange,
            routing_key=self.queue_name,
            headers=headers,
            delivery_mode=2,
            content_type=message.content_type or "application/octet-stream",
            content_encoding=message.content_encoding or "binary",
            **{k: v for k, v in properties.items() if k in ("message_id", "correlation_id", "timestamp", "type")},
        )
        message.ack()
