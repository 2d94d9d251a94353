"""Event streams against raw Redis in one run (issue 17): the relay's append rate from the outbox
vs raw ``XADD`` of the same fields, and the consumer library vs a bare ``XREADGROUP``/``XACK`` loop.

Append: ``ROWS`` committed events of a streamed class wait in the outbox (not timed); the relay's
streams pass (sequencing in commit order, then ``XADD`` with explicit ids and ``MAXLEN ~``, in
batches of ``STREAMS_BATCH``) drains them. Raw: the same field dicts ``XADD``ed from one process
in pipelines of the same size, ids chosen by Redis; what a competent raw user does, without
order, exactly-once or a record. Consume: a stream of ``ROWS`` entries, drained by the library's
``RedisStreamConsumer`` (no-op handler, batch ``COUNT``) vs a loop of ``XREADGROUP COUNT`` and one
``XACK`` of the batch. Sides alternate; medians of ``BENCH_REPEAT`` runs go to ``results.json``
under ``streams``.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from pathlib import Path

import redis as redis_lib

from benchmarks import run as bench

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"
ROWS = 5000
COUNT = 100  # entries per XREADGROUP, both sides
TARGET = 0.8


STREAM = "bench.items"


def setup() -> redis_lib.Redis:
    import django

    from benchmarks.database import ensure_database

    ensure_database(bench.os.environ["DATABASE_URL"])
    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from tasks.streams.sinks import sinks_reset

    call_command("migrate", verbosity=0)
    settings.STREAMS_REDIS_URL = bench.BENCH_REDIS_URL
    settings.STREAMS_DEFAULT_SINK = "redis"
    settings.STREAMS_SINKS = {}
    sinks_reset()
    return redis_lib.Redis.from_url(bench.BENCH_REDIS_URL)


def reset(client: redis_lib.Redis) -> None:
    from tasks.models import Outbox, StreamCursor, StreamEntry

    client.flushdb()
    StreamEntry.objects.all().delete()
    StreamCursor.objects.all().delete()
    Outbox.objects.all().delete()


def platform_append(client: redis_lib.Redis) -> float:
    """Entries/s of the relay's streams pass draining ROWS committed events."""
    from django.db import transaction

    from benchmarks.bench_tasks import BenchStreamed
    from tasks.streams.appends import stream_relay_pass
    from tasks.transaction import register_event

    reset(client)
    for start in range(0, ROWS, 500):
        with transaction.atomic():
            for n in range(start, min(start + 500, ROWS)):
                register_event(BenchStreamed(key=f"k{n % 50}", n=n))
    started = time.monotonic()
    appended = 0
    while appended < ROWS:
        appended += stream_relay_pass()
    return ROWS / (time.monotonic() - started)


def appended_fields() -> list[dict[str, str]]:
    from tasks.models import StreamEntry
    from tasks.streams.sinks import fields_of

    return [fields_of(entry) for entry in StreamEntry.objects.order_by("position")]


def raw_append(client: redis_lib.Redis, fields: list[dict[str, str]]) -> float:
    """Entries/s of pipelined XADD of the same fields, batched as the relay batches."""
    from django.conf import settings

    client.delete(STREAM)
    started = time.monotonic()
    for start in range(0, len(fields), settings.STREAMS_BATCH):
        with client.pipeline(transaction=False) as pipe:
            for entry in fields[start : start + settings.STREAMS_BATCH]:
                pipe.xadd(STREAM, entry, maxlen=settings.STREAMS_REDIS_MAXLEN, approximate=True)
            pipe.execute()
    return len(fields) / (time.monotonic() - started)


def filled(client: redis_lib.Redis) -> None:
    from tasks.streams.entries import entry_fields

    client.delete(STREAM)
    with client.pipeline(transaction=False) as pipe:
        for n in range(ROWS):
            key = f"k{n % 50}"
            fields = entry_fields(
                message_id=str(uuid.uuid4()),
                type="bench.BenchStreamed",
                occurred_at="2026-01-01T00:00:00+00:00",
                key=key,
                payload={"key": key, "n": n},
                schema_version=1,
            )
            pipe.xadd(STREAM, fields)
        pipe.execute()
    client.xgroup_create(STREAM, "bench", id="0")


def library_consume(client: redis_lib.Redis) -> float:
    """Entries/s of the consumer library (no-op handler) draining ROWS entries."""
    from tasks.streams.consumer import RedisStreamConsumer

    filled(client)
    consumer = RedisStreamConsumer(
        client, stream=STREAM, group="bench", consumer="c1", handler=lambda event: None, batch=COUNT, block=0.01
    )
    started = time.monotonic()
    done = 0
    while done < ROWS:
        done += consumer.poll()
    return ROWS / (time.monotonic() - started)


def bare_consume(client: redis_lib.Redis) -> float:
    """Entries/s of XREADGROUP COUNT and one XACK per batch, nothing else."""
    filled(client)
    started = time.monotonic()
    done = 0
    while done < ROWS:
        reply = client.xreadgroup("bench", "c1", {STREAM: ">"}, count=COUNT)
        ids = [entry_id for _, entries in reply for entry_id, _fields in entries]
        if ids:
            client.xack(STREAM, "bench", *ids)
        done += len(ids)
    return ROWS / (time.monotonic() - started)


def row(case: str, baseline: str, platform: list[float], raw: list[float]) -> dict:
    ratio = round(statistics.median(platform) / statistics.median(raw), 3)
    return {
        "case": case,
        "baseline": baseline,
        "platform": platform,
        "raw": raw,
        "ratio": ratio,
        "target": f">= {TARGET}x",
        "met": ratio >= TARGET,
    }


def main() -> None:
    client = setup()
    runs: dict[str, list[float]] = {"append": [], "raw append": [], "consume": [], "bare consume": []}
    for _ in range(bench.REPEAT):
        runs["append"].append(platform_append(client))
        runs["raw append"].append(raw_append(client, appended_fields()))
        runs["consume"].append(library_consume(client))
        runs["bare consume"].append(bare_consume(client))
        print({side: round(values[-1]) for side, values in runs.items()}, flush=True)
    reset(client)
    rows = [
        row(
            f"stream append from the outbox (relay pass), entries/s ({ROWS} per run)",
            "raw pipelined XADD of the same fields",
            runs["append"],
            runs["raw append"],
        ),
        row(
            f"stream consumer library, entries/s ({ROWS} per run, COUNT {COUNT})",
            "bare XREADGROUP + XACK loop",
            runs["consume"],
            runs["bare consume"],
        ),
    ]
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["streams"] = rows
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps([{k: v for k, v in r.items() if k not in ("platform", "raw")} for r in rows], indent=2))


if __name__ == "__main__":
    main()
