"""Beat at scale: 1,000 and 10,000 PeriodicTasks, an admin edit, and what reloading costs.

For each size the database is filled with that many schedules (half crontab, half interval,
none due) plus one ``probe``. Then:

- **edit in force**: a real ``celery beat`` with the PlatformScheduler is running; the probe
  is edited through the admin change form (kwargs and schedule); the figure is the time
  from the POST until Beat sends the probe under its new settings (the issue asks < 6 s);
- **reload cost**, measured in this process: the time of the tick that applies one edited
  row (PlatformScheduler, incremental), of the full comparison it falls back to, and of
  django-celery-beat's stock DatabaseScheduler re-reading the schedule after a change;
- **idle tick**: one tick with nothing due and nothing changed.

The ratio 10k/1k shows what grows with the number of schedules.

    python benchmarks/beat_scale.py       # prints a table, writes benchmarks/beat_scale.json

Uses PostgreSQL (``DATABASE_URL``, default database ``bench_beat_scale``, created if missing)
and the Redis at ``BENCH_REDIS_URL`` (default database 12).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SIZES = (1_000, 10_000)
REPEATS = 5


def populate(size: int) -> None:
    from django.db import connection
    from django.utils import timezone
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks

    from tasks.models import BeatHeartbeat, ScheduleChange

    if connection.vendor == "postgresql":
        # Deleting 10,000 rows through the ORM sends their delete signals one by one (minutes).
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {PeriodicTask._meta.db_table} CASCADE")
    PeriodicTask.objects.all().delete()
    ScheduleChange.objects.all().delete()
    BeatHeartbeat.objects.all().delete()
    hourly = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.HOURS)[0]
    # Twelve hours away: nothing falls due while the benchmark runs, so only reloads are timed.
    hour = str((timezone.now().hour + 12) % 24)
    crontabs = [CrontabSchedule.objects.get_or_create(minute=str(m), hour=hour, timezone="UTC")[0] for m in range(60)]
    recently = timezone.now() - timedelta(minutes=1)
    rows = [
        PeriodicTask(
            name=f"bench-{n:05d}",
            task="tasks.noop",
            interval=hourly if n % 2 else None,
            crontab=None if n % 2 else crontabs[n % 60],
            last_run_at=recently,
        )
        for n in range(size)
    ]
    PeriodicTask.objects.bulk_create(rows, batch_size=2000)
    PeriodicTask.objects.create(
        name="probe", task="tasks.noop", interval=hourly, kwargs='{"v": 0}', last_run_at=recently
    )
    # As if created long ago: only what is edited from now on is recent.
    PeriodicTask.objects.update(date_changed=timezone.now() - timedelta(hours=1))
    PeriodicTasks.update_changed()


def edit_in_force(client, beat) -> float:
    """Seconds from the admin POST that moves the probe from hourly to every second until Beat sends it."""
    from django.urls import reverse
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    probe = PeriodicTask.objects.get(name="probe")
    every_second = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)[0]
    data = {
        "name": "probe", "regtask": "tasks.noop", "task": "", "enabled": "on", "description": "edited",
        "interval": str(every_second.pk), "crontab": "", "solar": "", "clocked": "",
        "start_time_0": "", "start_time_1": "", "args": "[]", "kwargs": "{}",
        "expires_0": "", "expires_1": "", "expire_seconds": "", "queue": "", "exchange": "",
        "routing_key": "", "priority": "", "headers": "{}",
        "policy-TOTAL_FORMS": "1", "policy-INITIAL_FORMS": "0", "policy-MIN_NUM_FORMS": "0",
        "policy-MAX_NUM_FORMS": "1", "policy-0-misfire": "run_once", "policy-0-overlap": "allow",
    }  # fmt: skip
    posted_at = datetime.now().astimezone()
    response = client.post(reverse("admin:django_celery_beat_periodictask_change", args=[probe.pk]), data)
    assert response.status_code == 302, response.content[:2000]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sent = beat.sent("probe")
        if sent:
            stamp = sent[0].split("sent probe at ", 1)[1].split(" ", 1)[0]
            return (datetime.fromisoformat(stamp) - posted_at).total_seconds()
        time.sleep(0.05)
    raise TimeoutError(f"the edit was not in force within 60 s:\n{beat.log()[-3000:]}")


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def reload_costs() -> dict[str, float]:
    """Median seconds of each kind of reload and of an idle tick, in this process."""
    from django_celery_beat.models import PeriodicTask, PeriodicTasks
    from django_celery_beat.schedulers import DatabaseScheduler

    from config.celery_app import app
    from tasks.scheduling.scheduler import PlatformScheduler

    platform = PlatformScheduler(app=app)
    initial_load = timed(platform.tick)
    incremental, full, idle = [], [], []
    for n in range(REPEATS):
        task = PeriodicTask.objects.get(name=f"bench-{n:05d}")
        task.kwargs = json.dumps({"edit": n})
        task.save()
        platform._next_change_check = 0
        incremental.append(timed(platform.tick))
        assert platform.schedule[task.name].kwargs == {"edit": n}
        platform._next_change_check = 0
        idle.append(timed(platform.tick))
        full.append(timed(platform._full_reload))
    platform.close()

    stock = DatabaseScheduler(app=app)
    stock.tick()
    stock_reload, stock_idle = [], []
    for _ in range(REPEATS):
        PeriodicTasks.update_changed()
        stock_reload.append(timed(lambda: stock.schedule))
        stock._last_timestamp = PeriodicTasks.last_change()
        stock_idle.append(timed(stock.tick))
    return {
        "platform_initial_load": initial_load,
        "platform_incremental_reload_tick": statistics.median(incremental),
        "platform_full_comparison": statistics.median(full),
        "platform_idle_tick": statistics.median(idle),
        "stock_reload": statistics.median(stock_reload),
        "stock_idle_tick": statistics.median(stock_idle),
    }


def measure(size: int) -> dict[str, float]:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from tests.support.processes import CeleryBeat, process_env

    populate(size)
    costs = reload_costs()
    connection.close()
    populate(size)
    user = get_user_model().objects.filter(username="bench").first() or get_user_model().objects.create_superuser(
        "bench", "bench@example.com", "bench-password"
    )
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    client = Client()
    client.force_login(user)
    beat = CeleryBeat(env=process_env()).start()
    try:
        beat.wait_for_log(f"loaded {size + 1} schedules", timeout=120)
        costs["edit_in_force"] = edit_in_force(client, beat)
    finally:
        beat.stop()
    return costs


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # Production settings (DEBUG off keeps no query log), with a key only benchmarks use.
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key")
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_beat_scale")
    os.environ["CELERY_BROKER_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    if os.environ["DATABASE_URL"].startswith("postgres"):
        from benchmarks.database import ensure_database

        ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    results = {size: measure(size) for size in SIZES}
    small, large = (results[size] for size in SIZES)
    ratios = {key: large[key] / small[key] for key in small if small[key]}
    print(f"{'measure':34} {'1k':>10} {'10k':>10} {'10k/1k':>8}")
    for key in small:
        print(f"{key:34} {small[key]:>9.4f}s {large[key]:>9.4f}s {ratios[key]:>8.1f}")
    out = {"sizes": list(SIZES), "seconds": {str(size): results[size] for size in SIZES}, "ratio_10k_1k": ratios}
    (ROOT / "benchmarks" / "beat_scale.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
