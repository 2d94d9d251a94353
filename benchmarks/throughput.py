"""Platform vs raw Celery in one run: delivery throughput, commit-to-start latency, relay catch-up.

Both sides use the same worker process (concurrency 2, prefetch 1) against the machine's Redis
and PostgreSQL; runs alternate platform / raw so machine noise hits both alike.
"""

from __future__ import annotations

import functools
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from benchmarks.bench_tasks import (
    LATENCY_KEY,
    BenchEvent,
    raw_noop,
    raw_noop_ignored,
    raw_noop_untracked,
)
from tasks.messaging.relay import outbox_relay_once
from tasks.models import Delivery, Outbox
from tasks.transaction import register_event


def _reset(redis_client) -> None:
    _sent.clear()
    redis_client.delete(LATENCY_KEY)
    for queue in ("high", "default", "low"):
        redis_client.delete(queue)
    Delivery.objects.all().delete()
    Outbox.objects.all().delete()


def _wait_for(redis_client, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while redis_client.llen(LATENCY_KEY) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {redis_client.llen(LATENCY_KEY)} of {count} started")
        time.sleep(0.01)


_sent: dict[str, float] = {}


def _stamp(key: str) -> None:
    _sent[key] = time.time()


def send_platform_event() -> None:
    key = uuid.uuid4().hex
    with transaction.atomic():
        # Registered first, so it runs first after the commit: the time latency counts from.
        transaction.on_commit(functools.partial(_stamp, key))
        register_event(BenchEvent(key=key))


def send_raw_task() -> None:
    key = uuid.uuid4().hex
    _sent[key] = time.time()
    raw_noop.delay(key)


def send_raw_untracked_task() -> None:
    key = uuid.uuid4().hex
    _sent[key] = time.time()
    raw_noop_untracked.delay(key)


def send_raw_ignored_task() -> None:
    key = uuid.uuid4().hex
    _sent[key] = time.time()
    raw_noop_ignored.delay(key)


SIDES: dict[str, Callable[[], None]] = {
    "platform": send_platform_event,
    "raw": send_raw_task,
    "raw untracked": send_raw_untracked_task,
    "raw ignored": send_raw_ignored_task,
}


def throughput(redis_client, send: Callable[[], None], count: int) -> float:
    """Messages per second from the first send until the last handler started."""
    _reset(redis_client)
    started = time.monotonic()
    for _ in range(count):
        send()
    _wait_for(redis_client, count)
    return count / (time.monotonic() - started)


def throughput_alternating(
    redis_client, sides: dict[str, Callable[[], None]], *, repeat: int, count: int
) -> dict[str, list[float]]:
    """Each side's throughput ``repeat`` times, sides alternating (after one warm-up run each), so
    machine noise hits them alike; printed as they come."""
    for send in sides.values():
        throughput(redis_client, send, 100)
    rates: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(repeat):
        for side, send in sides.items():
            rates[side].append(throughput(redis_client, send, count))
            print(f"throughput {side}: {rates[side][-1]:.0f}/s", flush=True)
    return rates


def latency(redis_client, send: Callable[[], None], count: int, pause: float) -> list[float]:
    """Seconds from commit (or delay) to handler start, at a pace the worker keeps up with."""
    _reset(redis_client)
    for _ in range(count):
        send()
        time.sleep(pause)
    _wait_for(redis_client, count)
    starts = (entry.decode().split() for entry in redis_client.lrange(LATENCY_KEY, 0, -1))
    return [float(started) - _sent.pop(key) for key, started in starts]


def relay_catch_up(redis_client, rows: int) -> float:
    """Rows per second the relay sends from a backlog of ``rows`` unsent outbox rows."""
    _reset(redis_client)
    old = timezone.now() - timedelta(minutes=1)
    events = [BenchEvent(key="relay") for _ in range(rows)]
    Outbox.objects.bulk_create(
        (Outbox(message_id=e.message_id, message_type=e.message_name, payload=e.to_json()) for e in events),
        batch_size=2000,
    )
    Outbox.objects.update(created_at=old)
    if connection.vendor == "postgresql":
        # As if the backlog had piled up over time: without the 10,000 dead row versions the
        # UPDATE above leaves, and with statistics for the planner of the relay's claim query.
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {Outbox._meta.db_table}")
    started = time.monotonic()
    while outbox_relay_once(grace=timedelta(0)):
        pass
    elapsed = time.monotonic() - started
    _reset(redis_client)
    return rows / elapsed


def raw_publish(redis_client, rows: int) -> float:
    """Raw Celery: ``apply_async`` one by one, the baseline of the relay."""
    _reset(redis_client)
    started = time.monotonic()
    for _ in range(rows):
        raw_noop.apply_async(("raw",))
    elapsed = time.monotonic() - started
    _reset(redis_client)
    return rows / elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
