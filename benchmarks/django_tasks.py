"""Django's task API on the platform (issue 18) vs raw Celery, in one run:

- ``bench_job.enqueue()`` in a transaction, end to end to the function's start, against raw
  ``delay()`` of a task doing the same (this app's configuration, the same worker): throughput
  (target >= 1.0x) and commit-to-start latency p50 (target <= 1.3x);
- the relay's release of 10,000 due delayed deliveries against raw ``apply_async()`` of as many
  messages one by one (target >= 2x).

Writes its rows into ``results.json`` under ``django_tasks`` and prints them; ``make bench`` runs
it after ``run.py``.
"""

from __future__ import annotations

import functools
import statistics
import time
import uuid
from datetime import timedelta

from benchmarks import run as bench

TARGETS = {"throughput": 1.0, "latency_p50": 1.3, "release": 2.0}


def send_enqueue() -> None:
    from django.db import transaction

    from benchmarks import throughput as t
    from benchmarks.bench_tasks import bench_job

    key = uuid.uuid4().hex
    with transaction.atomic():
        transaction.on_commit(functools.partial(t._stamp, key))
        bench_job.enqueue(key)


def release_due(client, rows: int) -> float:
    """Rows per second the relay's delayed pass publishes from ``rows`` due delayed deliveries."""
    from django.utils import timezone

    from benchmarks import throughput as t
    from benchmarks.bench_tasks import BenchEvent, bench_handler
    from tasks.messaging.deliveries import deliveries_build
    from tasks.messaging.subscriptions import Subscription
    from tasks.models import Delivery
    from tasks.reliability.delayed import deliveries_send_due

    t._reset(client)
    subscription = Subscription(BenchEvent, bench_handler, is_async=True, queue_name="default")
    due = timezone.now() + timedelta(seconds=30)
    built = deliveries_build([(BenchEvent(key="delayed"), subscription) for _ in range(rows)], run_after=due)
    Delivery.objects.bulk_create(built, batch_size=2000)
    Delivery.objects.update(run_after=timezone.now())
    started = time.monotonic()
    while deliveries_send_due():
        pass
    elapsed = time.monotonic() - started
    t._reset(client)
    return rows / elapsed


def main() -> None:
    import django
    import redis

    django.setup()
    from benchmarks import throughput as t
    from benchmarks.database import database_prepare, results_store
    from tests.support.processes import CeleryWorker, process_env

    database_prepare()
    client = redis.Redis.from_url(bench.BENCH_REDIS_URL)
    sides = {"enqueue": send_enqueue, "raw": t.send_raw_task}
    latencies: dict[str, list[float]] = {side: [] for side in sides}
    worker = CeleryWorker(env=process_env(), concurrency=2, extra_args=("--include", "benchmarks.bench_tasks"))
    with worker:
        rates = t.throughput_alternating(client, sides, repeat=bench.REPEAT, count=bench.COUNT)
        for _ in range(bench.REPEAT):
            for side, send in sides.items():
                latencies[side].extend(t.latency(client, send, 200, pause=0.02))
    release: dict[str, list[float]] = {"platform": [], "raw": []}
    for _ in range(bench.RELAY_REPEAT):
        release["platform"].append(release_due(client, bench.RELAY_ROWS))
        release["raw"].append(t.raw_publish(client, bench.RELAY_ROWS))
        print(f"release {release['platform'][-1]:.0f}/s raw {release['raw'][-1]:.0f}/s", flush=True)
    p50 = {side: t.percentile(values, 0.5) * 1000 for side, values in latencies.items()}
    ratios = {
        "throughput": statistics.median(rates["enqueue"]) / statistics.median(rates["raw"]),
        "latency_p50": p50["enqueue"] / p50["raw"],
        "release": statistics.median(release["platform"]) / statistics.median(release["raw"]),
    }
    rows = {
        "throughput": {"enqueue": rates["enqueue"], "raw": rates["raw"]},
        "latency_p50_ms": p50,
        "release": release,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "met": {
            "throughput": ratios["throughput"] >= TARGETS["throughput"],
            "latency_p50": ratios["latency_p50"] <= TARGETS["latency_p50"],
            "release": ratios["release"] >= TARGETS["release"],
        },
    }
    results_store("django_tasks", rows)


if __name__ == "__main__":
    main()
