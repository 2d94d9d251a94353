"""Rate and concurrency limits with real workers and a real relay (issue 19): a global rate holds
across four worker processes while another queue's jobs keep flowing; a concurrency limit per key
never lets a third job of a key run; every job runs once."""

from __future__ import annotations

import os
import time

import pytest
from django.db import transaction
from django.db.models import Count

from tasks.models import Delivery
from tasks.transaction import register_event
from tests.e2e.conftest import fast_recovery_env
from tests.support.flow_limit_handlers import (
    CONCURRENCY,
    FLOW_LIMITED_APPS,
    NOTIFY_HANDLER,
    RATE,
    PartnerNotified,
    Pinged,
    ScanRequested,
    scan_intervals,
    subscribed,
)
from tests.support.ledger.models import Effect
from tests.support.processes import CeleryWorker, Relay
from tests.support.queues import purge_platform_queues
from tests.support.rate_admissions import admissions
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.django_db(transaction=True), pytest.mark.serial]

# The run is 500 jobs (about 50 s); the suite runs fewer to stay in its time budget, and
# FLOW_RATE_TEST_JOBS=500 runs the full one.
RATE_JOBS = int(os.environ.get("FLOW_RATE_TEST_JOBS", "200"))


@pytest.fixture
def limited_handlers(redis_client):
    purge_platform_queues()
    with subscribed():
        yield


def _env() -> dict[str, str]:
    return fast_recovery_env(EXTRA_INSTALLED_APPS=FLOW_LIMITED_APPS, OUTBOX_RELAY_INTERVAL="0.25")


def _progress(done, worker: CeleryWorker) -> str:
    statuses = dict(Delivery.objects.values_list("status").annotate(n=Count("pk")).order_by())
    return f"{done.count()} ran; deliveries by status {statuses}; worker log: {worker.log()[-3000:]}"


def _most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.usefixtures("limited_handlers")
def test_a_global_rate_limit_holds_on_four_workers_and_waiting_jobs_hold_no_worker(redis_client):
    env = _env()
    workers = [CeleryWorker(env=env, concurrency=2) for _ in range(2)]
    with workers[0], workers[1], Relay(env=env) as relay:
        began = time.monotonic()
        with transaction.atomic():
            for n in range(RATE_JOBS):
                register_event(PartnerNotified(n=n))
        partner = Effect.objects.filter(key__startswith="partner:")
        wait_until(
            lambda: partner.count() >= RATE_JOBS // 4,
            timeout=RATE_JOBS / RATE + 30,
            message=lambda: _progress(partner, workers[0]) + relay.log()[-3000:],
        )

        # Waiting jobs hold no worker: another queue's jobs run at once meanwhile.
        pinged = time.monotonic()
        with transaction.atomic():
            for n in range(20):
                register_event(Pinged(n=n))
        wait_until(lambda: Effect.objects.filter(key__startswith="ping:").count() == 20, timeout=10)
        pings_took = time.monotonic() - pinged
        assert partner.count() < RATE_JOBS, "the limited jobs were still waiting while the pings ran"

        wait_until(
            lambda: partner.count() >= RATE_JOBS,
            timeout=RATE_JOBS / RATE * 2 + 30,
            message=lambda: _progress(partner, workers[0]),
        )
        took = time.monotonic() - began
        time.sleep(1)  # a second run of any, if there were one, would be recorded by now

    keys = list(partner.values_list("key", flat=True))
    assert len(keys) == RATE_JOBS and len(set(keys)) == RATE_JOBS, "each job ran exactly once"
    admitted = admissions(redis_client, NOTIFY_HANDLER)
    assert len(admitted) >= RATE_JOBS, "every job was admitted"
    # The limiter counted each start at a moment between before and after: a window shorter than
    # the period by the widest such gap holds at most RATE starts.
    uncertainty = max(after - before for before, after in admitted)
    assert uncertainty < 0.5, "the admissions were timed closely enough to test the limit"
    assert _most_in_any_window([before for before, _ in admitted], 1.0 - uncertainty) <= RATE
    assert took >= (RATE_JOBS - RATE) / RATE, "the limit spread the starts over the periods it implies"
    print(
        f"{RATE_JOBS} jobs at {RATE}/s took {took:.1f} s; 20 jobs of another queue {pings_took:.1f} s meanwhile; "
        f"admissions timed within {uncertainty * 1000:.0f} ms"
    )


@pytest.mark.usefixtures("limited_handlers")
def test_a_concurrency_limit_per_key_never_runs_more_at_once_and_all_finish():
    env = _env()
    workers = [CeleryWorker(env=env, concurrency=2) for _ in range(2)]
    jobs = 8
    with workers[0], workers[1], Relay(env=env):
        with transaction.atomic():
            for n in range(jobs):
                for author_id in (1, 2):
                    register_event(ScanRequested(author_id=author_id, n=n))
        wait_until(
            lambda: Effect.objects.filter(key__startswith="scan:").count() >= 2 * jobs,
            timeout=60,
            message=lambda: workers[0].log()[-3000:],
        )
        time.sleep(1)

    for author_id in (1, 2):
        intervals = scan_intervals(author_id)
        assert len(intervals) == jobs, "each job ran exactly once"
        most = max(sum(1 for s, f in intervals if s <= start < f) for start, _ in intervals)
        assert most <= CONCURRENCY, f"author {author_id}: {most} ran at once"
    all_intervals = scan_intervals(1) + scan_intervals(2)
    assert max(sum(1 for s, f in all_intervals if s <= start < f) for start, _ in all_intervals) > CONCURRENCY, (
        "the limit is per key: two authors' jobs ran side by side"
    )
