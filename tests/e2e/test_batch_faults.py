"""A batch of 10,000 members on two workers, one of them killed with kill -9 twice mid-batch: the
completion callback (a Django task) runs once, with counts that match the members' outcomes, and
each member's effect is applied once (issue 18).

Real workers, relay (the sweeper re-sends what the kills lost; the batches pass finishes it) and
broker; the members are events registered in one transaction, their handler the ledger's."""

from __future__ import annotations

import os
import time

import pytest
from django.db import transaction

from tasks.batches import batch_close, batch_members, batch_open
from tasks.batches.completion import batch_counts
from tasks.models import Batch
from tasks.transaction import register_event
from tests.e2e.conftest import fast_recovery_env
from tests.support import django_jobs as jobs
from tests.support.ledger.handlers import LedgerEvent, effects_summary
from tests.support.processes import CeleryWorker, Relay
from tests.support.queues import purge_platform_queues
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.django_db(transaction=True)]

MEMBERS = int(os.environ.get("BATCH_FAULT_MEMBERS", "10000"))


def test_a_batch_survives_a_worker_killed_twice_and_calls_back_once_with_exact_counts(redis_client):
    purge_platform_queues()
    # A short visibility timeout: a killed worker's reserved messages come back sooner.
    env = fast_recovery_env(
        CELERY_VISIBILITY_TIMEOUT="8",
        CELERY_TASK_TIME_LIMIT="3",
        CELERY_TASK_SOFT_TIME_LIMIT="2",
        DATABASE_LOCK_TIMEOUT="1",
    )
    workers = [CeleryWorker(extra_args=("--include", "tests.support.django_jobs"), env=env) for _ in range(2)]
    relay = Relay(env=env)
    with transaction.atomic():
        batch = batch_open(name="ten thousand", on_complete=jobs.batch_finished)
        with batch_members(batch):
            for n in range(MEMBERS):
                register_event(LedgerEvent(key=f"member-{n}", work_seconds=0.002))
        batch = batch_close(batch=batch)
    assert batch.total == MEMBERS
    with relay, workers[0], workers[1]:
        victim = workers[1]
        for kill_after in (MEMBERS // 5, MEMBERS // 2):
            wait_until(lambda n=kill_after: batch_counts(batch.pk)["done"] >= n, timeout=300)
            victim.kill()
            time.sleep(1)
            victim.start()

        def finished() -> bool:
            return Batch.objects.get(pk=batch.pk).status == Batch.Status.FINISHED

        wait_until(finished, timeout=300, interval=1, message=lambda: f"{batch_counts(batch.pk)}")
        wait_until(jobs.batch_callbacks, timeout=60, message=lambda: workers[0].log()[-2000:])
        time.sleep(3)  # a second callback, if any, would run now
    batch.refresh_from_db()
    counts = batch_counts(batch.pk)
    assert counts["pending"] == 0 and counts["done"] + counts["failed"] == MEMBERS
    assert (batch.done, batch.failed) == (counts["done"], counts["failed"])
    assert jobs.batch_callbacks() == [[batch.pk, "ten thousand", MEMBERS, counts["done"], counts["failed"]]]
    # Each done member's effect applied once, none twice (a killed run rolled back and ran again).
    assert effects_summary() == (counts["done"], 0)
