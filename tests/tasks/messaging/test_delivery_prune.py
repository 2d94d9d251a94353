"""Pruning done deliveries after the idempotency window (issue 14 item 10): only done rows completed
before DELIVERY_RETENTION_DAYS go, in batches; pending, running, unplanned and dead rows never do."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.messaging.delivery_prune import deliveries_prune_done
from tasks.models import Delivery
from tasks.scheduling.declared import declared_schedules
from tasks.tasks import PRUNE_DELIVERIES_TASK, prune_deliveries

pytestmark = pytest.mark.django_db


def delivery(status: str, *, completed_days_ago: float | None = None, sent_days_ago: float = 60) -> Delivery:
    now = timezone.now()
    return Delivery.objects.create(
        message_id=uuid.uuid4(),
        handler="tests.handler",
        message_type="test.Event",
        payload={},
        queue="default",
        status=status,
        sent_at=now - timedelta(days=sent_days_ago),
        completed_at=None if completed_days_ago is None else now - timedelta(days=completed_days_ago),
    )


def test_only_done_deliveries_completed_before_the_window_are_pruned_in_batches(settings):
    settings.DELIVERY_RETENTION_DAYS = 14
    expired = [delivery(Delivery.Status.DONE, completed_days_ago=15) for _ in range(5)]
    young = delivery(Delivery.Status.DONE, completed_days_ago=13)
    kept = [young] + [
        delivery(status) for status in ("pending", "running", "unplanned", "dead")
    ]  # old, but never finished: not the window's to end

    assert deliveries_prune_done(batch_size=2) == len(expired)

    assert set(Delivery.objects.values_list("pk", flat=True)) == {row.pk for row in kept}


def test_the_job_reports_what_it_deleted_and_is_declared_on_the_low_queue_once_at_a_time():
    assert prune_deliveries() == {"deleted": 0}
    delivery(Delivery.Status.DONE, completed_days_ago=400)
    assert prune_deliveries() == {"deleted": 1}
    declared = declared_schedules()["prune_deliveries"]
    assert (declared.task, declared.queue, declared.overlap) == (PRUNE_DELIVERIES_TASK, "low", "skip")
