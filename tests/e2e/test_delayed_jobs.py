"""Delayed jobs held in the database (issue 18): they reach the broker only when due, so the two
Celery failures of long ETAs cannot happen, and a cancel holds across relay restarts.

Real worker and relay processes; Redis or RabbitMQ as the suite's broker."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest
from celery import current_app
from django.utils import timezone

from tasks.django_tasks.compat import TaskResultStatus
from tasks.django_tasks.results import TaskCancelled
from tasks.models import Delivery, TaskRun
from tasks.monitoring.queue_stats import queue_stats
from tests.e2e.conftest import fast_recovery_env
from tests.support import django_jobs as jobs
from tests.support.processes import CeleryWorker, Relay
from tests.support.queues import purge_platform_queues
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.django_db(transaction=True)]

# Short enough to pass three times in a test; the limits below it keep what the settings require.
VISIBILITY_TIMEOUT = 8
SHORT_TIMEOUTS = {
    "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
    "CELERY_TASK_TIME_LIMIT": "3",
    "CELERY_TASK_SOFT_TIME_LIMIT": "2",
    "DATABASE_LOCK_TIMEOUT": "1",
    "OUTBOX_RELAY_INTERVAL": "0.2",
}


@pytest.fixture
def processes(redis_client):
    purge_platform_queues()
    env = fast_recovery_env(**SHORT_TIMEOUTS)
    worker = CeleryWorker(extra_args=("--include", "tests.support.django_jobs"), env=env)
    relay = Relay(env=env)
    with worker, relay:
        yield worker, relay


def held_by_broker_or_workers() -> int:
    """Messages waiting in the platform's queues, plus those workers hold as ETA messages."""
    scheduled = current_app.control.inspect(timeout=2).scheduled() or {}
    return sum(q.depth for q in queue_stats()) + sum(len(held) for held in scheduled.values())


def test_a_job_delayed_three_visibility_timeouts_runs_once(processes):
    worker, _ = processes
    due = timezone.now() + timedelta(seconds=3 * VISIBILITY_TIMEOUT)
    result = jobs.count_run.using(run_after=due).enqueue("delayed-once")
    time.sleep(VISIBILITY_TIMEOUT)
    assert held_by_broker_or_workers() == 0, "held in the database, not in the broker"
    assert Delivery.objects.get(message_id=result.id).status == Delivery.Status.DELAYED

    def done() -> bool:
        result.refresh()
        return result.is_finished

    wait_until(done, timeout=4 * VISIBILITY_TIMEOUT, message=lambda: worker.log()[-3000:])
    assert result.started_at >= due, "not before it was due"
    # A message redelivered after the visibility timeout would run within it (plus kombu's 5 s restore).
    time.sleep(VISIBILITY_TIMEOUT + 6)
    assert jobs.runs_of("delayed-once") == 1
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.attempts == 1


def test_a_worker_with_a_hundred_delayed_jobs_holds_none_and_runs_each_once(processes):
    worker, _ = processes
    due = timezone.now() + timedelta(seconds=10)
    results = [jobs.count_run.using(run_after=due).enqueue(f"held-{n}") for n in range(100)]
    time.sleep(3)
    # Nothing waits in the broker or in the worker as an ETA message: no visibility timeout to
    # outlive on Redis, no consumer_timeout to outlive on RabbitMQ.
    assert held_by_broker_or_workers() == 0
    wait_until(
        lambda: TaskRun.objects.filter(result_id__in=[r.id for r in results], finished_at__isnull=False).count() == 100,
        timeout=90,
        message=lambda: worker.log()[-3000:],
    )
    assert all(jobs.runs_of(f"held-{n}") == 1 for n in range(100))
    assert worker.running
    assert "consumer ack timed out" not in worker.log() and "PRECONDITION_FAILED" not in worker.log()


def test_a_cancel_before_due_holds_across_a_relay_restart(processes):
    worker, relay = processes
    due = timezone.now() + timedelta(seconds=6)
    result = jobs.count_run.using(run_after=due).enqueue("cancelled")
    kept = jobs.count_run.using(run_after=due).enqueue("kept")
    out = subprocess.run(
        [sys.executable, "manage.py", "deliveries_cancel", "--message-id", result.id],
        env=fast_recovery_env(**SHORT_TIMEOUTS), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "cancelled 1" in out.stdout
    relay.kill()
    relay.start()

    def kept_done() -> bool:
        kept.refresh()
        return kept.is_finished

    wait_until(kept_done, timeout=30, message=lambda: relay.log()[-3000:] + worker.log()[-3000:])
    time.sleep(2)
    result.refresh()
    assert jobs.runs_of("cancelled") == 0 and jobs.runs_of("kept") == 1
    assert result.status == TaskResultStatus.FAILED and result.started_at is None
    assert [e.exception_class for e in result.errors] == [TaskCancelled]
