"""Work that expires before it runs becomes a dead letter "expired", on Redis and RabbitMQ alike."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from celery import current_app
from django.db import transaction
from django.utils import timezone

from tasks.messaging.deliveries import deliveries_publish
from tasks.models import DeadLetter, Delivery
from tasks.monitoring.task_metrics import ProcessMetricFiles
from tasks.queues import queue_deadline
from tasks.transaction import register_event
from tests.support.ledger.handlers import LedgerEvent
from tests.support.ledger.models import Effect
from tests.support.priority_tasks import STARTS_KEY
from tests.support.processes import CeleryWorker, process_env
from tests.support.publisher import publisher_reset
from tests.support.queues import queued_messages
from tests.support.waiting import wait_until


def test_a_queue_without_expiry_never_expires_its_work_and_one_with_counts_from_the_given_time(settings):
    settings.QUEUE_EXPIRES = {"low": 60}
    created = timezone.now() - timedelta(seconds=50)
    assert queue_deadline("default") is None
    assert queue_deadline("low", since=created) == created + timedelta(seconds=60)


@pytest.mark.django_db(transaction=True)
def test_a_queues_expiry_is_stamped_on_tasks_and_on_deliveries_from_their_creation(redis_client, settings):
    settings.QUEUE_EXPIRES = {"default": 600}
    current_app.send_task("tasks.ping", queue="default")
    with transaction.atomic():
        register_event(LedgerEvent(key="stamped"))
    publisher_reset()
    Delivery.objects.update(created_at=timezone.now() - timedelta(seconds=100))
    delivery = Delivery.objects.get()
    deliveries_publish([delivery])  # a re-send, as the sweeper's

    messages = queued_messages(redis_client, "default")
    task, first, resent = (datetime.fromisoformat(m["headers"]["expires"]) for m in messages)
    assert abs((task - timezone.now()).total_seconds() - 600) < 30
    assert abs((resent - (delivery.created_at + timedelta(seconds=600))).total_seconds()) < 1
    assert first > resent  # the first send counted from the real creation, 100 s later


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.usefixtures("clean_broker_queues")
def test_an_expired_task_and_an_expired_delivery_become_dead_letters_and_never_run(redis_client, settings, tmp_path):
    settings.QUEUE_EXPIRES = {"default": 1}
    current_app.send_task("tests.record_start", ("too late",), queue="low", expires=1)
    with transaction.atomic():
        register_event(LedgerEvent(key="too late"))
    publisher_reset()
    time.sleep(2)  # no worker is up before both deadlines pass

    env = process_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    with CeleryWorker(env=env, extra_args=("--include", "tests.support.priority_tasks")) as worker:

        def both_dead_lettered() -> list[DeadLetter] | None:
            rows = list(DeadLetter.objects.filter(reason="expired"))
            return rows if len(rows) == 2 else None

        dead = wait_until(both_dead_lettered, timeout=60, message=lambda: worker.log()[-3000:])

    by_task = {row.task_name: row for row in dead}
    assert by_task["tests.record_start"].args == ["too late"]
    assert by_task["tasks.deliver"].handler == "tests.support.ledger.handlers.record_effect"
    assert Delivery.objects.get().status == Delivery.Status.DEAD  # the sweeper leaves it; requeue sends it
    assert redis_client.llen(STARTS_KEY) == 0 and not Effect.objects.exists()
    expired = {
        sample.labels["name"]: sample.value
        for family in ProcessMetricFiles(tmp_path).collect()
        if family.name == "platform_tasks_expired"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert expired == {"tests.record_start": 1.0, "tasks.deliver": 1.0}
