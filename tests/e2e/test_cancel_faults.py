"""Persistent and cooperative cancel (issue 19): cancelled queued jobs never run, across a restart
of the worker and of the broker; a running job sees the cancel and stops, ending cancelled, and
one that ignores it is killed after the grace period (the hard stop)."""

from __future__ import annotations

import time

import pytest
import redis
from django.core.management import call_command
from django.db import transaction

from tasks.django_tasks.compat import TaskResultStatus
from tasks.models import DeadLetter, Delivery
from tests.support import django_jobs as jobs
from tests.support.broker import publishing_to
from tests.support.ledger.models import Effect
from tests.support.processes import CeleryWorker, DurableRedisServer, Relay, process_env
from tests.support.queues import purge_platform_queues
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.mark.broker
def test_a_running_job_stops_on_a_cancel_and_ends_cancelled(redis_client):
    purge_platform_queues()
    worker = CeleryWorker(extra_args=("--include", "tests.support.django_jobs"), env=process_env())
    with worker:
        result = jobs.stops_when_cancelled.enqueue("long")
        wait_until(lambda: jobs.runs_of("long:started") == 1, timeout=30, message=lambda: worker.log()[-2000:])
        call_command("deliveries_cancel", "--message-id", result.id)

        def ended() -> bool:
            result.refresh()
            return result.is_finished

        wait_until(ended, timeout=15, message=lambda: worker.log()[-2000:])
    assert result.status == TaskResultStatus.FAILED and jobs.runs_of("long:stopped") == 1
    assert Delivery.objects.get(message_id=result.id).status == Delivery.Status.CANCELLED
    assert not DeadLetter.objects.exists(), "a cancel is not a failure"


@pytest.mark.broker
def test_a_running_job_that_ignores_a_cancel_is_killed_after_the_grace_period_and_its_work_rolled_back(redis_client):
    purge_platform_queues()
    env = process_env(CANCEL_HARD_STOP_AFTER="2", OUTBOX_RELAY_INTERVAL="0.5")
    worker = CeleryWorker(extra_args=("--include", "tests.support.django_jobs"), env=env)
    with worker, Relay(env=env) as relay:
        result = jobs.ignores_cancel.enqueue("stubborn")
        wait_until(lambda: jobs.runs_of("stubborn:started") == 1, timeout=30, message=lambda: worker.log()[-2000:])
        asked = time.monotonic()
        call_command("deliveries_cancel", "--message-id", result.id)
        delivery = Delivery.objects.filter(message_id=result.id)
        wait_until(
            lambda: delivery.get().status == Delivery.Status.CANCELLED,
            timeout=20,
            message=lambda: relay.log()[-2000:] + worker.log()[-2000:],
        )
        took = time.monotonic() - asked
        # The worker goes on with other work.
        jobs.count_run.enqueue("after")
        wait_until(lambda: jobs.runs_of("after") == 1, timeout=30, message=lambda: worker.log()[-2000:])
        time.sleep(2)

    assert took >= 2, "the handler had its grace period first"
    assert jobs.runs_of("stubborn:started") == 1 and jobs.runs_of("stubborn:finished") == 0
    assert not Effect.objects.filter(key="stubborn").exists(), "its work rolled back with its process"
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert not DeadLetter.objects.exists(), "a cancel is not a failure"


def test_cancelled_queued_jobs_never_run_across_a_worker_and_broker_restart(redis_client, tmp_path):
    broker = DurableRedisServer(tmp_path / "redis").start()
    try:
        env = process_env(CELERY_BROKER_URL=broker.url)
        with publishing_to(broker.url), transaction.atomic():
            results = [jobs.count_run.enqueue(f"queued-{n}") for n in range(100)]
        client = redis.Redis.from_url(broker.url)

        def waiting() -> int:  # every priority step's list of the default queue
            return sum(client.llen(key) for key in client.scan_iter("default*") if client.type(key) == b"list")

        assert waiting() >= 100, "the jobs wait in the broker"
        call_command("deliveries_cancel", "--all", "--status", "pending")
        worker = CeleryWorker(extra_args=("--include", "tests.support.django_jobs"), env=env)
        with worker:  # a worker takes some, then it and the broker go down and come back
            time.sleep(2)
        broker.restart()
        with CeleryWorker(extra_args=("--include", "tests.support.django_jobs"), env=env) as again:
            wait_until(lambda: waiting() == 0, timeout=60, message=lambda: again.log()[-2000:])
            time.sleep(2)
        assert sum(jobs.runs_of(f"queued-{n}") for n in range(100)) == 0
        statuses = set(Delivery.objects.filter(message_id__in=[r.id for r in results]).values_list("status", flat=True))
        assert statuses == {Delivery.Status.CANCELLED}
    finally:
        broker.stop()
