"""The platform's queues in tests: read the messages waiting in a Redis queue as a worker would
receive them; empty the queues on either broker."""

from __future__ import annotations

import base64
import json

import redis as redis_lib

from config.celery_app import app
from tasks.messaging.publisher import publisher_flush


def queued_messages(redis_client: redis_lib.Redis, queue: str) -> list[dict]:
    """The task messages waiting in ``queue``, oldest first (kombu LPUSHes, a worker BRPOPs),
    once this process's publisher thread has sent what its commits handed it.

    Each is a dict with the task ``name``, its ``id``, ``args``, ``kwargs``, ``argsrepr`` and ``headers``.
    """
    publisher_flush(10)
    messages = []
    for raw in reversed(redis_client.lrange(queue, 0, -1)):
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _ = json.loads(body)
        headers = envelope["headers"]
        messages.append(
            {
                "task": headers["task"],
                "id": headers["id"],
                "args": args,
                "kwargs": kwargs,
                "argsrepr": headers.get("argsrepr"),
                "headers": headers,
            }
        )
    return messages


def purge_platform_queues() -> None:
    """Empty the three queues on whichever broker the tests use (Redis or RabbitMQ)."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            bound = queue(channel)
            bound.declare()
            bound.purge()
