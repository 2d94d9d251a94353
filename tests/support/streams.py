"""Streams in tests: a streamed message, processes that write it, consume it and record handling.

``StreamedItem`` is known to the relay and consumer processes through the ``tests.support.streamed``
app (``STREAMED_APPS`` in their environment).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import redis

from tasks.messages import Message
from tasks.streams.entries import entry_fields
from tests.support.processes import ManagedProcess, process_env

STREAM = "tests.items"
# Every process of a streams test loads the streamed test app beside the usual test apps.
STREAMED_APPS = "tests.support.ledger,tests.support.streamed"
# Where the test handler records what it handled (the tests' Redis), read by the test.
HANDLED_KEY = "streams-test:handled"


@dataclass(frozen=True)
class StreamedItem(Message):
    stream = STREAM
    stream_key = "item_key"

    item_key: str
    n: int
    writer: int = 0


# RabbitMQ for the RabbitMQ sink and consumer, whatever the suite's broker: TEST_STREAMS_RABBITMQ_URL,
# else the suite's broker when it is RabbitMQ, else the local server's default vhost.
_broker = os.environ.get("TEST_BROKER_URL", "")
RABBITMQ_URL = os.environ.get(
    "TEST_STREAMS_RABBITMQ_URL", _broker if _broker.startswith("amqp") else "amqp://guest:guest@127.0.0.1:5672//"
)


# The stream tests that reach RABBITMQ_URL share its exchanges and consumer queues: under
# pytest-xdist they all run in one process (``--dist loadgroup``).
ON_SHARED_RABBITMQ = pytest.mark.xdist_group("shared-rabbitmq")


def streams_env(**overrides: str) -> dict[str, str]:
    """A process environment with the streamed test app and the tests' stream brokers."""
    env = {
        "EXTRA_INSTALLED_APPS": STREAMED_APPS,
        "STREAMS_REDIS_URL": os.environ["TEST_REDIS_URL"],
        "STREAMS_RABBITMQ_URL": RABBITMQ_URL,
        "STREAMS_DEFAULT_SINK": "redis",
        **overrides,
    }
    return process_env(**env)


def fields(*, key: str = "k", payload: dict | None = None, message_id: str | None = None) -> dict[str, str]:
    """A well-formed entry, for consumer tests that write the stream themselves."""
    return entry_fields(
        message_id=message_id or str(uuid.uuid4()),
        type="tests.Item",
        occurred_at=datetime.now(UTC).isoformat(),
        key=key,
        payload=payload or {},
        schema_version=1,
    )


def record_handled(event) -> None:
    """The handler ``stream_consume`` runs in tests: sleeps ``payload["sleep"]`` seconds, raises
    for a ``poison`` payload, and records (message_id, consumer pid, time) in the tests' Redis."""
    client = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    time.sleep(float(event.payload.get("sleep", 0)))
    if event.payload.get("poison"):
        raise ValueError(f"poison {event.message_id}")
    client.rpush(
        HANDLED_KEY,
        json.dumps(
            {
                "message_id": event.message_id,
                "key": event.key,
                "n": event.payload.get("n"),
                "pid": os.getpid(),
                "at": time.time(),
            }
        ),
    )


def handled(client: redis.Redis) -> list[dict]:
    return [json.loads(row) for row in client.lrange(HANDLED_KEY, 0, -1)]


class StreamConsumer(ManagedProcess):
    """``manage.py stream_consume`` with the recording handler."""

    ready_marker = "stream consumer started"

    def __init__(self, *, stream: str, group: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None):
        command = [
            sys.executable, "manage.py", "stream_consume", "--stream", stream, "--group", group,
            "--handler", "tests.support.streams.record_handled", *args,
        ]  # fmt: skip
        super().__init__(command, name=f"stream-consumer-{group}", env=env or streams_env())


WRITER_SCRIPT = """
import os, sys, django
django.setup()
import redis
from django.db import connection, transaction
from tasks.transaction import register_event
from tests.support.streams import StreamedItem

writer, count, keys = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
counters = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
for i in range(count):
    key = (writer * 7919 + i * 31) % keys
    with transaction.atomic():
        # Writers of one key serialise on it, as services lock an aggregate's row: the order of
        # n per key is then its commit order, which the stream must keep.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [424200 + key])
        n = counters.incr(f"streams-test:n:{key}")
        register_event(StreamedItem(item_key=f"item-{key}", n=n, writer=writer))
print("writer done", flush=True)
"""


class Writer(ManagedProcess):
    """A process that commits ``count`` StreamedItem events, one per transaction, over ``keys`` keys."""

    def __init__(self, writer: int, count: int, keys: int) -> None:
        super().__init__(
            [sys.executable, "-c", WRITER_SCRIPT, str(writer), str(count), str(keys)],
            name=f"stream-writer-{writer}",
            env=streams_env(),
        )
