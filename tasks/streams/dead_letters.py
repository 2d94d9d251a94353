"""Dead-lettered stream entries, as an operator reads them.

The consumer library moves an entry it gave up on to ``<stream>:dead:<group>`` with the entry's
fields plus ``error``, ``entry_id``, ``deliveries``, ``consumer`` and ``dead_at``, and acks it in
the source stream. This lists them; it does not re-append them. The relay appends to a Redis
stream with explicit ids taken when an event is sequenced (``tasks.streams.sequencing``), and an
entry anything else adds between sequencing and appending has an id above the relay's next one:
the relay then stops that stream with ``StreamConflict``. Handing a dead letter back to its group
safely needs a retry stream the consumer library reads besides the source stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis
from django.conf import settings

from tasks.streams.stats import redis_streams

DEAD_SUFFIX = ":dead:"


@dataclass(frozen=True)
class StreamDeadLetter:
    """One entry of a dead-letter stream, as an operator reads it."""

    stream: str
    group: str
    dead_id: str
    message_id: str
    type: str
    key: str
    error: str
    deliveries: int | None
    dead_at: str
    entry_id: str


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.STREAMS_REDIS_URL, socket_timeout=3, socket_connect_timeout=3)


def _dead_letter(stream: str, group: str, dead_id: object, raw: object) -> StreamDeadLetter:
    fields = {_text(k): _text(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    deliveries = fields.get("deliveries", "")
    return StreamDeadLetter(
        stream=stream,
        group=group,
        dead_id=_text(dead_id),
        message_id=fields.get("message_id", ""),
        type=fields.get("type", ""),
        key=fields.get("key", ""),
        error=fields.get("error", ""),
        deliveries=int(deliveries) if deliveries.isdigit() else None,
        dead_at=fields.get("dead_at", ""),
        entry_id=fields.get("entry_id", ""),
    )


def stream_dead_letters(*, client: redis.Redis | None = None, limit: int = 200) -> list[StreamDeadLetter]:
    """The newest ``limit`` dead letters of each group of each Redis stream the relay appends to.

    Groups are found by their dead-letter streams (``SCAN``), so a deleted group's dead letters
    still show. A key of another type under that name is skipped.
    """
    client = client or _client()
    found: list[StreamDeadLetter] = []
    for stream in redis_streams():
        prefix = f"{stream}{DEAD_SUFFIX}"
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", prefix) + "*"  # the stream's name matched literally
        names = sorted(_text(name) for name in client.scan_iter(match=pattern, count=500, _type="stream"))
        for name in names:
            group = name[len(prefix) :]
            for dead_id, raw in client.xrevrange(name, count=limit):
                found.append(_dead_letter(stream, group, dead_id, raw))
    return found
