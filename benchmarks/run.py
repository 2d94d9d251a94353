"""``make bench``: every benchmark case against its raw-Celery baseline, in one run.

Starts its own worker against the machine's Redis (database 9) and a PostgreSQL database of its
own (``bench``), repeats each case, and writes ``benchmarks/results.json``, the table in
``benchmarks/README.md`` and ``benchmarks/throughput.png``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_REDIS_URL = os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ["CELERY_BROKER_URL"] = BENCH_REDIS_URL
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Production settings (DEBUG off keeps no query log), with a key only benchmarks use.
os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key")
# /health/ready is measured computing its report, not answering from its few-second cache.
os.environ["HEALTH_REPORT_CACHE_SECONDS"] = "0"
os.environ["LOG_LEVEL"] = "WARNING"
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
# Relay runs are long (10,000 rows): fewer repeats keep make bench under 10 minutes.
RELAY_REPEAT = int(os.environ.get("BENCH_RELAY_REPEAT", "4"))
COUNT = int(os.environ.get("BENCH_COUNT", "500"))
RELAY_ROWS = int(os.environ.get("BENCH_RELAY_ROWS", "10000"))
STATUS_ROWS = int(os.environ.get("BENCH_STATUS_ROWS", "1000000"))
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def machine_facts() -> dict[str, str]:
    import celery
    import django
    import kombu
    import redis as redis_lib

    return {
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "django": django.get_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis-py": redis_lib.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def run_cases() -> dict:
    import redis

    from benchmarks import throughput as t
    from benchmarks.api_write import api_write
    from tests.support.processes import CeleryWorker, process_env

    client = redis.Redis.from_url(BENCH_REDIS_URL)

    results: dict = {"throughput": {side: [] for side in t.SIDES}, "latency": {side: [] for side in t.SIDES}}
    worker = CeleryWorker(env=process_env(), concurrency=2, extra_args=("--include", "benchmarks.bench_tasks"))
    worker.start()
    try:
        for send in t.SIDES.values():  # warm every side up
            t.throughput(client, send, 100)
        for _ in range(REPEAT):
            for side, send in t.SIDES.items():
                results["throughput"][side].append(t.throughput(client, send, COUNT))
                print(f"throughput {side}: {results['throughput'][side][-1]:.0f}/s", flush=True)
        for send in t.SIDES.values():  # not counted: the first run after the throughput runs was an outlier
            t.latency(client, send, 50, pause=0.02)
        for _ in range(REPEAT):
            for side, send in t.SIDES.items():
                results["latency"][side].extend(t.latency(client, send, 200, pause=0.02))
    finally:
        worker.stop()
    results["relay"] = {"platform": [], "raw": []}
    for _ in range(RELAY_REPEAT):
        results["relay"]["platform"].append(t.relay_catch_up(client, RELAY_ROWS))
        results["relay"]["raw"].append(t.raw_publish(client, RELAY_ROWS))
        print(f"relay {results['relay']['platform'][-1]:.0f}/s raw {results['relay']['raw'][-1]:.0f}/s", flush=True)
    results["api"] = api_write(REPEAT)
    results["status"] = status_scaling()
    return results


def status_scaling() -> dict[str, dict[str, float]]:
    """Median seconds of ``/health/ready`` and the status page with 1,000 and 1,000,000 task
    results (no worker runs, so both wait the same inspect timeouts)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from benchmarks.status_page import FILL

    user = get_user_model().objects.filter(username="bench").first() or get_user_model().objects.create_superuser(
        "bench", "bench@example.com", "bench"
    )
    client = Client(SERVER_NAME="127.0.0.1")
    client.force_login(user)
    timings: dict[str, dict[str, float]] = {}
    for rows in (1_000, STATUS_ROWS):
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE django_celery_results_taskresult")
            cursor.execute(FILL, {"rows": rows})
            cursor.execute("ANALYZE django_celery_results_taskresult")
        for name, url in (("health", "/health/ready"), ("status page", "/admin/platform-status/")):
            runs = []
            for _ in range(5):
                started = time.monotonic()
                client.get(url)
                runs.append(time.monotonic() - started)
            timings.setdefault(name, {})[str(rows)] = statistics.median(runs)
        print(f"status scaling at {rows:,} rows: {timings}", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE django_celery_results_taskresult")
    return timings


def _rate_row(case: str, baseline: str, platform: dict, raw: dict, *, at_least: float) -> dict:
    """A row for a rate (higher is better): platform median / raw median, met at ``at_least``."""
    ratio = platform["median"] / raw["median"]
    return {
        "case": case,
        "baseline": baseline,
        "platform": platform,
        "raw": raw,
        "ratio": ratio,
        "target": f">= {at_least:g}x",
        "met": ratio >= at_least,
    }


def table(results: dict) -> tuple[list[dict], str]:
    from benchmarks.throughput import percentile, summary

    rows = []
    tp = {side: summary(v) for side, v in results["throughput"].items()}
    untracked = "a raw task that writes no STARTED result (Celery's default)"
    ignored = "a raw task with `ignore_result=True` (fire and forget: no result row)"
    baselines = {
        "raw": ("raw `delay()` -> same worker (this app's `task_track_started`)", "raw `delay()` -> task start"),
        "raw untracked": (untracked, untracked),
    }
    case = f"event in a transaction -> outbox -> worker -> no-op handler, msgs/s ({COUNT} per run)"
    for raw, baseline, at_least in (
        ("raw", baselines["raw"][0], 0.9),
        ("raw untracked", untracked, 1.0),
        ("raw ignored", ignored, 0.5),
    ):
        rows.append(_rate_row(case, baseline, tp["platform"], tp[raw], at_least=at_least))
    for raw, (_, baseline) in baselines.items():
        for q, target in ((0.5, 1.3), (0.99, 2.0)):
            platform_ms = percentile(results["latency"]["platform"], q) * 1000
            raw_ms = percentile(results["latency"][raw], q) * 1000
            rows.append(
                {
                    "case": f"latency commit -> handler start, p{round(q * 100)} (ms)",
                    "baseline": baseline,
                    "platform": {"median": platform_ms},
                    "raw": {"median": raw_ms},
                    "ratio": platform_ms / raw_ms,
                    "target": f"<= {target}x",
                    "met": platform_ms / raw_ms <= target,
                }
            )
    api = {side: summary(v) for side, v in results["api"].items()}
    case = (
        "API write view that registers an event (`POST /api/v1/components/{slug}/download`), "
        "requests/s (gunicorn, 2 sync workers; load client, 4 connections)"
    )
    rows.append(_rate_row(case, "the same view with the event removed", api["platform"], api["raw"], at_least=0.9))
    relay = {side: summary(v) for side, v in results["relay"].items()}
    case = f"relay catching up on {RELAY_ROWS:,} unsent outbox rows, rows/s"
    rows.append(_rate_row(case, "raw `apply_async()` one by one", relay["platform"], relay["raw"], at_least=2))

    beat_file = ROOT / "benchmarks" / "beat_scale.json"
    if beat_file.exists():  # written by beat_scale.py, which `make bench` runs first
        beat = json.loads(beat_file.read_text())["seconds"]
        small, large = beat["1000"], beat["10000"]
        rows.append(
            {
                "case": "Beat with 10,000 PeriodicTasks: admin edit until in force, seconds",
                "baseline": "1,000 tasks",
                "platform": {"median": large["edit_in_force"]},
                "raw": {"median": small["edit_in_force"]},
                "ratio": large["edit_in_force"] / small["edit_in_force"],
                "target": "<= 6 s at 10k",
                "met": large["edit_in_force"] <= 6,
            }
        )
        rows.append(
            {
                "case": "Beat reload cost (tick applying one edit), seconds",
                "baseline": "1,000 tasks",
                "platform": {"median": large["platform_incremental_reload_tick"]},
                "raw": {"median": small["platform_incremental_reload_tick"]},
                "ratio": large["platform_incremental_reload_tick"] / small["platform_incremental_reload_tick"],
                "target": "10k <= 12x 1k",
                "met": large["platform_incremental_reload_tick"] <= 12 * small["platform_incremental_reload_tick"],
            }
        )
    for name, by_rows in results["status"].items():
        small, large = by_rows["1000"], by_rows[str(STATUS_ROWS)]
        rows.append(
            {
                "case": f"`{name}` with {STATUS_ROWS:,} task results, seconds",
                "baseline": "the same with 1,000",
                "platform": {"median": large},
                "raw": {"median": small},
                "ratio": large / small,
                "target": "<= 2x",
                "met": large / small <= 2,
            }
        )

    def cell(s: dict) -> str:
        if "min" in s:
            return f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f})"
        return f"{s['median']:.3g}"

    lines = [
        "| case | baseline | platform | raw | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['case']} | {r['baseline']} | {cell(r['platform'])} | {cell(r['raw'])} | "
            f"{r['ratio']:.3g}x | {r['target']} | {'yes' if r['met'] else '**no**'} |"
            for r in rows
        ),
    ]
    return rows, "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.throughput import percentile

    fig, (left, right, api) = plt.subplots(1, 3, figsize=(15, 4))
    sides = list(results["throughput"])
    left.bar(sides, [statistics.median(results["throughput"][s]) for s in sides])
    left.set_title("delivery throughput (msgs/s, median)")
    for i, q in enumerate((0.5, 0.99)):
        values = [percentile(results["latency"][s], q) * 1000 for s in sides]
        right.bar([x + i * 0.4 for x in range(len(sides))], values, width=0.4, label=f"p{round(q * 100)}")
    right.set_xticks([x + 0.2 for x in range(len(sides))], sides)
    right.set_yscale("log")
    right.set_title("latency commit -> start (ms, log scale)")
    right.legend()
    api.bar(["with event", "without"], [statistics.median(results["api"][s]) for s in ("platform", "raw")])
    api.set_title("API write view (requests/s, median)")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    from benchmarks.database import ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    # The status page renders admin templates: with DEBUG off their static files need a manifest.
    call_command("collectstatic", interactive=False, verbosity=0)
    started = time.monotonic()
    results = run_cases()
    rows, markdown = table(results)
    facts = machine_facts()
    out = {"machine": facts, "cases": rows, "raw": results, "seconds": round(time.monotonic() - started)}
    (ROOT / "benchmarks" / "results.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    plot(results, ROOT / "benchmarks" / "throughput.png")
    facts_line = ", ".join(f"{k} {v}" for k, v in facts.items())
    block = f"{BEGIN}\nMachine: {facts_line}.\n\n{markdown}\n\n![throughput and latency](throughput.png)\n{END}"
    text = README.read_text() if README.exists() else "# Benchmarks\n\n"
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n## Platform vs raw Celery\n\n" + block + "\n"
    README.write_text(text)
    print(markdown)


if __name__ == "__main__":
    main()
