"""Tracing overhead (issue 20): the delivery case (an event committed -> outbox -> worker -> no-op
handler) with OpenTelemetry on vs off, in one run.

Each side runs in a process of its own (a tracer provider cannot be unset), with its own worker:
"on" sets the standard variables for both (``OTEL_TRACES_EXPORTER=otlp`` to a collector
stand-in in this process, batch export, every instrumentation of the platform on), "off" sets
none. Sides alternate so machine noise hits both alike. Writes its rows into ``results.json``
under ``tracing`` and prints them; ``make bench`` runs it after ``run.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import run as bench

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"
TARGET = 0.9  # throughput with tracing on >= 90% of off: overhead <= 10%


def one_side(tracing: bool, count: int) -> float:
    """Throughput of one side, measured in this process (run as ``python -m ... side on|off``)."""
    import django
    import redis

    django.setup()
    from benchmarks import throughput as t
    from tasks.monitoring.tracing import tracing_configure
    from tests.support.processes import CeleryWorker, process_env

    if tracing:
        tracing_configure(process="bench")
    client = redis.Redis.from_url(bench.BENCH_REDIS_URL)
    worker = CeleryWorker(env=process_env(), concurrency=2, extra_args=("--include", "benchmarks.bench_tasks"))
    with worker:
        t.throughput(client, t.send_platform_event, 100)  # warm up
        return t.throughput(client, t.send_platform_event, count)


def main() -> None:
    from benchmarks.database import ensure_database
    from tests.support.otlp import OtlpReceiver

    ensure_database(os.environ["DATABASE_URL"])
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True)
    repeat, count = bench.REPEAT, bench.COUNT
    runs: dict[str, list[float]] = {"off": [], "on": []}
    with OtlpReceiver(keep=False) as collector:
        tracing_env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.url,
            "OTEL_SERVICE_NAME": "bench",
        }
        for _ in range(repeat):
            for side in ("off", "on"):
                env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
                env.update(tracing_env if side == "on" else {})
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.tracing_overhead", "side", side, str(count)],
                    cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=600,
                )  # fmt: skip
                runs[side].append(float(out.stdout.strip().splitlines()[-1]))
                print(f"tracing {side}: {runs[side][-1]:.0f}/s", flush=True)
        spans = collector.received
    off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
    row = {
        "case": f"event -> outbox -> worker -> no-op handler, msgs/s ({count} per run), tracing on vs off",
        "off": runs["off"],
        "on": runs["on"],
        "ratio": round(on / off, 3),
        "target": f">= {TARGET}x",
        "met": on / off >= TARGET,
        "spans_exported": spans,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["tracing"] = row
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["side"]:
        print(one_side(sys.argv[2] == "on", int(sys.argv[3])))
    else:
        main()
