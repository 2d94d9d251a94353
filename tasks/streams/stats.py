"""What operators see of the event streams: per stream and consumer group, read from Redis now.

For each stream the relay appends to Redis (``STREAMS_SINKS`` / ``STREAMS_DEFAULT_SINK``):
its length, and per consumer group (``XINFO GROUPS``, so any group another service created
shows up) the entries pending (delivered, not acknowledged), the lag (entries not yet delivered
to the group, Redis 7+), how long the oldest pending entry has waited since it was last
delivered, and the length of the group's dead-letter stream (``<stream>:dead:<group>``, as the
consumer library writes it).

A group is **stuck** when it has work (lag or pending) and has acknowledged nothing for
``STREAMS_STUCK_GROUP_MINUTES``: progress is ``entries-read - pending`` (what the group has
read and acknowledged), remembered in Redis with the time it last moved, so every web process
judges from the same memory and a restart of one does not reset it.

RabbitMQ sinks are not listed here: a consumer queue belongs to its service and AMQP cannot list
queues, so ``tasks.streams.queue_stats`` reads the ones ``STREAMS_RABBITMQ_WATCHED_QUEUES`` names.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import redis
from django.conf import settings

from tasks.streams.sequencing import streamed_types

PROGRESS_KEY = "platform:streams:progress"


@dataclass(frozen=True)
class GroupStats:
    """One consumer group of one stream."""

    name: str
    consumers: int
    pending: int
    lag: int | None
    oldest_pending_seconds: float | None
    dead_letters: int
    seconds_without_progress: float
    stuck: bool


@dataclass(frozen=True)
class StreamStats:
    """One stream: its length and its groups."""

    name: str
    length: int
    groups: list[GroupStats] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def redis_streams() -> list[str]:
    """The streams the relay appends to Redis, by name."""
    names = {cls.stream for cls in streamed_types().values()}
    return sorted(n for n in names if settings.STREAMS_SINKS.get(n, settings.STREAMS_DEFAULT_SINK) == "redis")


def stream_stats(*, client: redis.Redis | None = None, now: float | None = None) -> list[StreamStats]:
    """Stats of every Redis stream the relay appends to. Raises on a Redis error."""
    client = client or redis.Redis.from_url(settings.STREAMS_REDIS_URL, socket_timeout=3, socket_connect_timeout=3)
    now = time.time() if now is None else now
    return [_stream(client, name, now) for name in redis_streams()]


def _stream(client: redis.Redis, name: str, now: float) -> StreamStats:
    if _text(client.type(name)) != "stream":
        return StreamStats(name=name, length=0)  # missing, or a key of another type under the name
    groups = client.xinfo_groups(name)
    return StreamStats(
        name=name, length=client.xlen(name), groups=[_group(client, name, group, now) for group in groups]
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _group(client: redis.Redis, stream: str, info: dict, now: float) -> GroupStats:
    group = _text(info.get("name", ""))
    pending = int(info.get("pending") or 0)
    lag = info.get("lag")
    lag = int(lag) if isinstance(lag, int | float) else None
    oldest = None
    if pending:
        first = client.xpending_range(stream, group, min="-", max="+", count=1)
        if first:
            oldest = int(first[0].get("time_since_delivered") or 0) / 1000
    read = info.get("entries-read")
    progress = (int(read) - pending) if isinstance(read, int) else None
    still = _seconds_without_progress(client, stream, group, progress, now)
    has_work = pending > 0 or bool(lag)
    return GroupStats(
        name=group,
        consumers=int(info.get("consumers") or 0),
        pending=pending,
        lag=lag,
        oldest_pending_seconds=oldest,
        dead_letters=_stream_length(client, f"{stream}:dead:{group}"),
        seconds_without_progress=still,
        stuck=has_work and still > settings.STREAMS_STUCK_GROUP_MINUTES * 60,
    )


def _stream_length(client: redis.Redis, name: str) -> int:
    """XLEN, or 0 for a key of another type under the name."""
    return client.xlen(name) if _text(client.type(name)) in ("stream", "none") else 0


def _seconds_without_progress(client: redis.Redis, stream: str, group: str, progress: int | None, now: float) -> float:
    """Seconds since the group's progress last changed, by the memory kept in Redis."""
    key = f"{stream}\x00{group}"
    seen = client.hget(PROGRESS_KEY, key)
    value, _, since = _text(seen).partition(" ") if seen is not None else ("", "", "")
    if seen is not None and value == str(progress):
        try:
            return max(0.0, now - float(since))
        except ValueError:
            pass  # not what this module writes: start the memory again
    client.hset(PROGRESS_KEY, key, f"{progress} {now}")
    return 0.0
