"""/health/ready's report cache: N concurrent probes cost one worker ping, and a report is reused
for HEALTH_REPORT_CACHE_SECONDS, then refreshed (the 503 path included)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from celery import current_app
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tasks.models import BeatHeartbeat
from tasks.monitoring import report_cache
from tasks.monitoring.report_cache import ReportCache

PROBES = 8


@pytest.fixture
def counted_pings(monkeypatch):
    """Replace the worker ping with one that takes a while and counts its calls; ``answer`` sets its reply."""
    calls = []
    state = {"answer": [{"worker@host-a": {"ok": "pong"}}]}

    def ping(timeout: float = 1.0, **kwargs):
        calls.append(time.monotonic())
        time.sleep(0.5)  # the real one waits its whole timeout for replies
        return state["answer"]

    monkeypatch.setattr(current_app.control, "ping", ping)
    return calls, state


@pytest.fixture
def fresh_beat(db):
    now = timezone.now()
    BeatHeartbeat.objects.update_or_create(
        name="beat", defaults={"leader": "beat-host:1", "started_at": now, "last_tick_at": now}
    )


def probe() -> tuple[int, dict]:
    response = Client().get(reverse("tasks:health_ready"))
    return response.status_code, response.json()


@pytest.mark.django_db(transaction=True)
def test_concurrent_anonymous_probes_share_one_worker_ping(counted_pings, fresh_beat, redis_client, settings):
    settings.HEALTH_REPORT_CACHE_SECONDS = 5
    calls, _ = counted_pings
    answers: list[tuple[int, dict]] = []
    start = threading.Barrier(PROBES)

    def run() -> None:
        start.wait(timeout=30)
        try:
            answers.append(probe())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(PROBES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert answers == [(200, {"status": "ok"})] * PROBES
    assert len(calls) == 1


@pytest.mark.django_db(transaction=True)
def test_a_report_is_reused_within_the_cache_time_then_refreshed_into_the_503(
    counted_pings, fresh_beat, redis_client, settings
):
    settings.HEALTH_REPORT_CACHE_SECONDS = 1
    calls, state = counted_pings

    assert probe() == (200, {"status": "ok"})
    state["answer"] = []  # every worker gone
    assert probe() == (200, {"status": "ok"})  # within the cache time: the same report
    assert len(calls) == 1

    time.sleep(1.2)
    assert probe() == (503, {"status": "fail"})
    assert len(calls) == 2


def test_callers_that_waited_for_a_refresh_share_it_even_without_caching():
    cache = ReportCache()
    computing = threading.Event()
    release = threading.Event()
    computed = []

    def compute():
        computed.append(1)
        computing.set()
        release.wait(10)
        return f"report {len(computed)}"

    first = threading.Thread(target=lambda: cache.get(compute, max_age=0))
    first.start()
    assert computing.wait(10)
    results = []
    waiters = [threading.Thread(target=lambda: results.append(cache.get(compute, max_age=0))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.5)  # let them reach the lock; a waiter that came later would compute anew
    release.set()
    for thread in [first, *waiters]:
        thread.join(10)

    assert results == ["report 1"] * 3
    assert cache.get(compute, max_age=0) == "report 2"  # after the refresh, max_age 0 computes anew


def test_the_cache_keeps_a_report_for_max_age_seconds(monkeypatch):
    cache = ReportCache()
    now = [100.0]
    monkeypatch.setattr(report_cache, "time", SimpleNamespace(monotonic=lambda: now[0]))
    reports = iter(["first", "second"])

    assert cache.get(lambda: next(reports), max_age=5) == "first"
    now[0] += 4.9
    assert cache.get(lambda: next(reports), max_age=5) == "first"
    now[0] += 0.2
    assert cache.get(lambda: next(reports), max_age=5) == "second"
