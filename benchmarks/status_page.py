"""Status page reads with a million task results: time of each windowed query and of the page.

Fills ``django_celery_results_taskresult`` with ``BENCH_ROWS`` (1,000,000) results spread over 30
days (5 % failures, a few periodic tasks), then times the page's database reads and one full
render. PostgreSQL only (rows are made with ``generate_series``); use a scratch database:

    createdb -h 127.0.0.1 -U postgres status_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/status_bench python benchmarks/status_page.py
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))

FILL = """
INSERT INTO django_celery_results_taskresult
    (task_id, task_name, status, content_type, content_encoding, result, date_created, date_done,
     traceback, meta, periodic_task_name, worker)
SELECT 'bench-' || n,
       'bench.task_' || (n %% 20),
       CASE WHEN n %% 20 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
       'application/json', 'utf-8', 'null',
       NOW() - (n * INTERVAL '30 days' / %(rows)s),
       NOW() - (n * INTERVAL '30 days' / %(rows)s),
       NULL, NULL,
       CASE WHEN n %% 100 = 0 THEN 'bench schedule ' || (n %% 7) END,
       'bench@host'
FROM generate_series(1, %(rows)s) AS n
"""


def timed(label: str, func) -> float:
    started = time.perf_counter()
    func()
    elapsed = time.perf_counter() - started
    print(f"{label:<40} {elapsed * 1000:9.1f} ms")
    return elapsed


def main() -> int:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone
    from django_celery_beat.models import IntervalSchedule, PeriodicTask
    from django_celery_results.models import TaskResult

    from tasks import monitoring_selectors as selectors

    if connection.vendor != "postgresql":
        print("Set DATABASE_URL to a scratch PostgreSQL database.")
        return 2
    call_command("migrate", verbosity=0)
    if not TaskResult.objects.filter(task_id="bench-1").exists():
        with connection.cursor() as cursor:
            timed(f"insert {ROWS:,} task results", lambda: cursor.execute(FILL, {"rows": ROWS}))
            cursor.execute("ANALYZE django_celery_results_taskresult")
    every = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)[0]
    for n in range(7):
        defaults = {"task": "tasks.ping", "interval": every}
        PeriodicTask.objects.get_or_create(name=f"bench schedule {n}", defaults=defaults)

    now = timezone.now()
    day_ago = now - timedelta(hours=24)
    timed("failures by task, last 24 h", lambda: selectors.failures_by_task(since=day_ago))
    timed("schedules with last status", lambda: selectors.schedules_overview(since=day_ago, now=now))
    timed("tasks per minute, last hour", lambda: selectors.tasks_per_minute(since=now - timedelta(minutes=59)))

    settings.ALLOWED_HOSTS = ["*"]
    user = get_user_model().objects.filter(username="bench").first() or get_user_model().objects.create_superuser(
        "bench", "bench@example.com", "bench"
    )
    client = Client()
    client.force_login(user)
    status = []
    timed("whole page (broker reads included)", lambda: status.append(client.get("/admin/platform-status/")))
    print(f"page status {status[0].status_code}, {len(status[0].content):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
