"""What the sides of the benchmarks run: a platform event + no-op handler, and raw Celery tasks.

Both record when they started, under a key the sender chose (a Redis list), so the platform and
raw Celery pay the same measuring cost; the sender subtracts its own send (or commit) time.
Workers load this module with ``--include benchmarks.bench_tasks``, which subscribes the handler.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta

import redis
from celery import shared_task

from tasks.bus import get_message_broker
from tasks.django_tasks.compat import task
from tasks.messages import Message

LATENCY_KEY = "bench:latency"
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client  # noqa: PLW0603 (one client per process)
    if _client is None:
        _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _client


def record_start(key: str) -> None:
    _redis().rpush(LATENCY_KEY, f"{key} {time.time()}")


@dataclass(frozen=True)
class BenchEvent(Message):
    key: str


def bench_handler(event: BenchEvent) -> None:
    """The no-op async handler of the platform side."""
    record_start(event.key)


# Subscribed on import, in the sender and in the worker (``--include``) alike: a worker runs only
# handlers its own process subscribed.
get_message_broker().subscribe_async(BenchEvent, bench_handler)


@shared_task(name="bench.raw_noop")
def raw_noop(key: str) -> None:
    """The raw-Celery side: a plain task, same worker, same result backend."""
    record_start(key)


@shared_task(name="bench.raw_noop_untracked", track_started=False)
def raw_noop_untracked(key: str) -> None:
    """The same raw task without the STARTED result this app writes for every task: Celery's
    default, and what the platform's deliveries skip (their Delivery row records the start)."""
    record_start(key)


@shared_task(name="bench.raw_noop_ignored", track_started=False, ignore_result=True)
def raw_noop_ignored(key: str) -> None:
    """Fire-and-forget raw Celery, as most production users run it: no result row at all."""
    record_start(key)


@dataclass(frozen=True)
class BenchStreamed(Message):
    """An event of the streams benchmark: appended to ``bench.items``, no handler."""

    stream = "bench.items"
    stream_key = "key"

    key: str
    n: int


@task
def bench_job(key: str) -> None:
    """The Django task API side (issue 18): the same work as ``raw_noop``."""
    record_start(key)


@dataclass(frozen=True)
class BenchUniqueEvent(Message):
    """The delivery case with a unique key per event (issue 19): what the uniqueness check costs
    when nothing is dropped."""

    key: str


def bench_unique_handler(event: BenchUniqueEvent) -> None:
    record_start(event.key)


get_message_broker().subscribe_async(
    BenchUniqueEvent, bench_unique_handler, unique=lambda e: e.key, unique_for=timedelta(minutes=1)
)


@dataclass(frozen=True)
class BenchRateLimitedEvent(Message):
    """The delivery case under a rate limit it never reaches (issue 19): what the check costs
    when nothing waits."""

    key: str


def bench_rate_limited_handler(event: BenchRateLimitedEvent) -> None:
    record_start(event.key)


get_message_broker().subscribe_async(BenchRateLimitedEvent, bench_rate_limited_handler, rate_limit="100000/second")
