"""Unique jobs and debounce with real workers (issue 19): 50 concurrent requests with one key run
the job once on four worker processes; debounced requests run once, with the last payload."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from tasks.transaction import register_event
from tests.e2e.conftest import fast_recovery_env
from tests.support.ledger.models import Effect
from tests.support.processes import CeleryWorker, Relay
from tests.support.queues import purge_platform_queues
from tests.support.unique_handlers import DEBOUNCE_SECONDS, ProfileEdited, request_reindex_concurrently, subscribed
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.django_db(transaction=True)]
WORKER_ARGS = ("--include", "tests.support.unique_worker")


@pytest.fixture
def unique_handlers(redis_client):
    purge_platform_queues()
    with subscribed():
        yield


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
@pytest.mark.usefixtures("unique_handlers")
def test_fifty_concurrent_requests_with_one_key_run_the_job_once_on_four_workers():
    env = fast_recovery_env()
    workers = [CeleryWorker(extra_args=WORKER_ARGS, env=env, concurrency=2) for _ in range(2)]
    with workers[0], workers[1]:
        request_reindex_concurrently(component_id=42, requests=50)
        wait_until(lambda: Effect.objects.filter(key__startswith="reindex:42:").exists(), timeout=30)
        time.sleep(3)  # a second run, if any, would have happened by now
    assert Effect.objects.filter(key__startswith="reindex:42:").count() == 1


@pytest.mark.usefixtures("unique_handlers")
def test_debounced_requests_run_once_after_the_last_with_its_payload():
    env = fast_recovery_env(OUTBOX_RELAY_INTERVAL="0.2")
    with CeleryWorker(extra_args=WORKER_ARGS, env=env), Relay(env=env):
        for revision in range(5):
            register_event(ProfileEdited(author_id=3, revision=revision))
            time.sleep(0.3)
        last_request = time.monotonic()
        wait_until(lambda: Effect.objects.filter(key__startswith="notify:3:").exists(), timeout=30)
        ran_after = time.monotonic() - last_request
        time.sleep(DEBOUNCE_SECONDS + 1)
    assert list(Effect.objects.filter(key__startswith="notify:3:").values_list("key", flat=True)) == ["notify:3:4"]
    assert ran_after >= DEBOUNCE_SECONDS - 0.5, "it waited for a quiet window after the last request"
