"""Flow control's cost (issue 19): the delivery case (an event committed -> outbox -> worker ->
no-op handler) with a unique key per event, and under a rate limit it never reaches, against the
same without either, in one run, sides alternating. Target: each check costs <= 10% throughput.
Writes its row into
``results.json`` under ``flow_control`` and prints it; ``make bench`` runs it after ``run.py``.
"""

from __future__ import annotations

import statistics
import uuid

from benchmarks import run as bench

TARGET = 0.9


def _send(event_class) -> None:
    import functools

    from django.db import transaction

    from benchmarks import throughput as t
    from tasks.transaction import register_event

    key = uuid.uuid4().hex
    with transaction.atomic():
        transaction.on_commit(functools.partial(t._stamp, key))
        register_event(event_class(key=key))


def send_unique_event() -> None:
    from benchmarks.bench_tasks import BenchUniqueEvent

    _send(BenchUniqueEvent)


def send_rate_limited_event() -> None:
    from benchmarks.bench_tasks import BenchRateLimitedEvent

    _send(BenchRateLimitedEvent)


def main() -> None:
    import django
    import redis

    django.setup()
    from benchmarks import throughput as t
    from benchmarks.database import database_prepare, results_store
    from tests.support.processes import CeleryWorker, process_env

    database_prepare()
    client = redis.Redis.from_url(bench.BENCH_REDIS_URL)
    sides = {"plain": t.send_platform_event, "unique": send_unique_event, "rate_limited": send_rate_limited_event}
    worker = CeleryWorker(env=process_env(), concurrency=2, extra_args=("--include", "benchmarks.bench_tasks"))
    with worker:
        rates = t.throughput_alternating(client, sides, repeat=bench.REPEAT, count=bench.COUNT)
    plain = statistics.median(rates["plain"])
    ratios = {side: round(statistics.median(rates[side]) / plain, 3) for side in ("unique", "rate_limited")}
    row = {
        "case": (
            f"event -> outbox -> worker -> no-op handler, msgs/s ({bench.COUNT} per run), "
            "unique key vs none, rate limit (never reached) vs none"
        ),
        **rates,
        "ratio": ratios["unique"],
        "rate_limit_ratio": ratios["rate_limited"],
        "target": f">= {TARGET}x each",
        "met": min(ratios.values()) >= TARGET,
    }
    results_store("flow_control", row)


if __name__ == "__main__":
    main()
