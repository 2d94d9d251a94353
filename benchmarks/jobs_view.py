"""The jobs view (issue 19) with a million rows: the time of each list page, filter and search of
the Deliveries admin (a million deliveries) and of the task results admin (a million results),
rendered through Django as an operator's browser asks for it.
Target: each answers within 1 s. Writes its row into ``results.json`` under ``jobs_view`` and
prints it; ``make bench`` runs it after ``run.py``.

PostgreSQL only (rows are made with ``generate_series``); it fills and then empties its own
database's delivery and task result tables (``DATABASE_URL``, ``bench`` by default).
"""

from __future__ import annotations

import statistics
import time
import uuid

from benchmarks import run as bench
from benchmarks.status_page import FILL as RESULTS_FILL

ROWS = bench.STATUS_ROWS
TARGET_SECONDS = 1.0
HANDLERS = [f"marketplace.handlers.handler_{n}" for n in range(8)]

# Two seconds apart, newest last: about 23 days of deliveries. 1 in 1,000 dead, 1 in 997
# waiting, the rest done; handlers, queues and authors spread evenly.
FILL = """
INSERT INTO tasks_delivery
    (message_id, handler, message_type, payload, queue, status, task_id, send_count,
     unfinished_starts, attempts, created_at, last_error, trace_context, unique_key, rate_key,
     concurrency_key)
SELECT gen_random_uuid(),
       (%(handlers)s::text[])[1 + n %% 8],
       'marketplace.ComponentRated',
       jsonb_build_object('type', 'marketplace.ComponentRated', 'data', jsonb_build_object(
           'component_id', n, 'author', 'author' || (n %% 1000), 'title', 'component number ' || n)),
       (ARRAY['high', 'default', 'low'])[1 + n %% 3],
       CASE WHEN n %% 1000 = 0 THEN 'dead' WHEN n %% 997 = 0 THEN 'waiting' ELSE 'done' END,
       gen_random_uuid()::text, 1, 0, 1,
       NOW() - ((%(rows)s - n) * INTERVAL '2 seconds'),
       '', '{}'::jsonb, '', '', ''
FROM generate_series(1, %(rows)s) AS n
"""


def delivery_pages(sample_message_id: str, sample_task_id: str) -> dict[str, str]:
    handler = HANDLERS[3]
    return {
        "list, newest first": "",
        "status dead": "?status__exact=dead",
        "status done": "?status__exact=done",
        "queue low": "?queue=low",
        "handler": f"?handler={handler}",
        "last hour": "?created=1h",
        "older than 7 days": "?created=older",
        "dead, one handler, last 7 days": f"?status__exact=dead&handler={handler}&created=7d",
        "search: delivery id": "?q=123456",
        "search: message id": f"?q={sample_message_id}",
        "search: task id": f"?q={sample_task_id}",
        "search: argument words (rare)": "?q=author417+number+417",
        "search: argument word (common)": "?q=author7",
        "search: no match": f"?q={uuid.uuid4().hex}",
    }


RESULT_PAGES = {
    "results: list, newest first": "",
    "results: status FAILURE": "?status__exact=FAILURE",
    "results: one task": "?task_name=bench.task_3",
    "results: finished last hour": "?done=1h",
    "results: finished over 7 days ago": "?done=older",
    "results: search task id": f"?q=bench-{ROWS // 2}",
}


def main() -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from benchmarks.database import database_prepare, results_store
    from tasks.models import Delivery

    database_prepare()
    call_command("collectstatic", interactive=False, verbosity=0)  # pages render with DEBUG off
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE tasks_delivery CASCADE")
        started = time.monotonic()
        cursor.execute(FILL, {"rows": ROWS, "handlers": HANDLERS})
        cursor.execute("VACUUM ANALYZE tasks_delivery")
        filled = time.monotonic() - started
    print(f"filled {ROWS:,} deliveries in {filled:.0f} s", flush=True)
    sample = Delivery.objects.filter(pk=ROWS // 2).values_list("message_id", "task_id").first() or ("", "")

    settings.ALLOWED_HOSTS = ["*"]
    user = get_user_model().objects.filter(username="bench").first() or get_user_model().objects.create_superuser(
        "bench", "bench@example.com", "bench"
    )
    client = Client(SERVER_NAME="127.0.0.1")
    client.force_login(user)
    seconds: dict[str, float] = {}

    def time_pages(path: str, pages: dict[str, str]) -> None:
        for name, query in pages.items():
            runs = []
            for _ in range(3):
                began = time.monotonic()
                response = client.get(f"{path}{query}")
                runs.append(time.monotonic() - began)
                assert response.status_code == 200, (name, response.status_code)
            seconds[name] = round(statistics.median(runs), 3)
            print(f"{name:<36} {seconds[name] * 1000:8.0f} ms", flush=True)

    time_pages("/admin/tasks/delivery/", delivery_pages(str(sample[0]), sample[1]))
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE tasks_delivery CASCADE")
        cursor.execute("TRUNCATE django_celery_results_taskresult")
        cursor.execute(RESULTS_FILL, {"rows": ROWS})
        cursor.execute("VACUUM ANALYZE django_celery_results_taskresult")
    time_pages("/admin/django_celery_results/taskresult/", RESULT_PAGES)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE django_celery_results_taskresult")
    slowest = max(seconds.values())
    results_store(
        "jobs_view",
        {
            "case": f"Deliveries and task results admin pages with {ROWS:,} rows each, median of 3, seconds",
            "pages": seconds,
            "slowest": slowest,
            "target": f"<= {TARGET_SECONDS} s each",
            "met": slowest <= TARGET_SECONDS,
        },
    )


if __name__ == "__main__":
    main()
