"""Pausing a queue (issue 19): no job starts from it two seconds after the pause, on any worker,
including one started while it is paused; nothing is lost or run twice; resume finishes all."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import transaction

from tests.support import django_jobs as jobs
from tests.support.processes import CeleryWorker, process_env
from tests.support.queues import purge_platform_queues
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.django_db(transaction=True), pytest.mark.serial]

JOBS = 1000
# "Takes effect within 2 seconds": a worker reads the paused set every second.
EFFECT_WITHIN = 2.0


def test_a_paused_queue_starts_nothing_after_two_seconds_and_resume_finishes_every_job(redis_client):
    purge_platform_queues()
    env = process_env(QUEUE_PAUSE_POLL_SECONDS="1")
    first = CeleryWorker(extra_args=("--include", "tests.support.django_jobs"), env=env)
    with first:
        with transaction.atomic():
            for n in range(JOBS):
                jobs.record_start_time.enqueue(f"job-{n}", 0.01)
        wait_until(lambda: len(jobs.start_times()) >= 100, timeout=60, message=lambda: first.log()[-2000:])
        call_command("queues", "pause", "default")
        paused_at = time.time()
        # A worker started while the queue is paused never consumes it.
        second = CeleryWorker(extra_args=("--include", "tests.support.django_jobs"), env=env)
        with second:
            time.sleep(EFFECT_WITHIN + 4)
            late = [label for label, at in jobs.start_times() if at > paused_at + EFFECT_WITHIN]
            assert late == [], f"{len(late)} jobs started more than {EFFECT_WITHIN} s after the pause"
            started_while_paused = len(jobs.start_times())
            assert started_while_paused < JOBS, "the run finished before the pause: nothing was tested"
            call_command("queues", "resume", "default")
            wait_until(lambda: len(jobs.start_times()) >= JOBS, timeout=120, message=lambda: first.log()[-2000:])
            time.sleep(2)
    starts = Counter(label for label, _ in jobs.start_times())
    assert len(starts) == JOBS, "none lost"
    assert max(starts.values()) == 1, f"ran twice: {[label for label, n in starts.items() if n > 1][:5]}"
    assert "queue default is paused: no longer consuming it" in first.log()
    assert "queue default is paused: no longer consuming it" in second.log()
