"""Where a commit's time goes: the sending side of the throughput case, platform vs raw Celery.

Times 500 sends of each side (wall and CPU of this process, no worker running), then profiles
the platform's with cProfile and prints the functions with the most cumulative time:

    python benchmarks/profile_commit.py

The worker side is profiled with py-spy on a running worker (see benchmarks/README.md).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchmarks.run as bench  # sets the benchmark environment first

SENDS = 500


def per_send(send) -> tuple[float, float]:
    """Milliseconds of wall time and of this process's CPU per send."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(SENDS):
        send()
    return (time.perf_counter() - wall) * 1000 / SENDS, (time.process_time() - cpu) * 1000 / SENDS


def main() -> None:
    from benchmarks.database import ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    import django
    import redis

    django.setup()
    from django.core.management import call_command

    from benchmarks import throughput as t

    call_command("migrate", verbosity=0)
    client = redis.Redis.from_url(bench.BENCH_REDIS_URL)

    try:
        for side, send in [*t.SIDES.items(), *t.SIDES.items()]:  # twice: the first warms up
            t._reset(client)
            wall, cpu = per_send(send)
            print(f"{side:8} {wall:5.2f} ms wall, {cpu:5.2f} ms CPU per send")
        t._reset(client)
        profile = cProfile.Profile()
        profile.runcall(per_send, t.send_platform_event)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(
            r"tasks/|celery/app|kombu/messaging|models/query", 25
        )
    finally:
        t._reset(client)


if __name__ == "__main__":
    main()
