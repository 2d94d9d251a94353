"""Recovery time after a whole worker dies: kill -9 of the main process and its children.

With production settings (visibility timeout 90 s, restore sweep every 5 s), a worker holds
two long deliveries; it is killed and a new worker started at once. The figure is the time
from the kill until each held delivery starts again, on Redis and on RabbitMQ.

    python benchmarks/recovery_time.py        # prints a table, writes benchmarks/recovery.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BROKERS = {
    "redis": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"),
    "rabbitmq": os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}
HELD = 2


def measure(broker_url: str, workdir: Path) -> list[float]:
    from django.db import connection

    from config.celery_app import app
    from tasks.models import Delivery
    from tasks.transaction import register_event
    from tests.support.ledger.handlers import LedgerEvent
    from tests.support.processes import CeleryWorker, process_env
    from tests.support.waiting import wait_until

    app.conf.broker_url = broker_url
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            queue(conn.default_channel).declare()
            queue(conn.default_channel).purge()
    Delivery.objects.all().delete()
    connection.close()

    flag = workdir / f"flag-{time.monotonic_ns()}"
    env = process_env(CELERY_BROKER_URL=broker_url)
    worker = CeleryWorker(env=env, concurrency=HELD).start()
    from tasks.messaging import deliveries as dispatch

    dispatch._pool = None  # publish to this broker
    try:
        for i in range(HELD):
            register_event(LedgerEvent(key=f"held{i}", mode="slow", work_seconds=30, flag_path=str(flag)))
        wait_until(lambda: Delivery.objects.filter(status="running").count() == HELD, timeout=60)
    finally:
        worker.kill()
    killed_at = time.monotonic()
    flag.touch()  # reruns are quick
    replacement = CeleryWorker(env=env, concurrency=HELD).start()
    restarted: dict[int, float] = {}
    try:
        while len(restarted) < HELD and time.monotonic() - killed_at < 300:
            for pk in Delivery.objects.filter(attempts__gte=2).values_list("pk", flat=True):
                restarted.setdefault(pk, time.monotonic() - killed_at)
            time.sleep(0.2)
    finally:
        replacement.stop()
    return sorted(restarted.values())


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="recovery-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # PostgreSQL: on SQLite one long handler holds the only write lock, so two cannot run at once.
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_recovery")
    from benchmarks.database import ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    os.environ.setdefault("EXTRA_INSTALLED_APPS", "tests.support.ledger")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    results = {}
    for name, url in BROKERS.items():
        times = measure(url, workdir)
        results[name] = {"held": HELD, "recovered": len(times), "seconds": [round(t, 1) for t in times]}
        print(f"{name:9} recovered {len(times)}/{HELD} held messages after {', '.join(f'{t:.1f}s' for t in times)}")
    (ROOT / "benchmarks" / "recovery.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
