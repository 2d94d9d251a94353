"""Persistent and cooperative cancel (issue 19): cancelled queued jobs never run, across a restart
of the worker and of the broker; a running job sees the cancel and stops, ending cancelled."""

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
from tests.support.processes import CeleryWorker, DurableRedisServer, process_env
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
