"""The relay's ``delayed`` pass: deliveries held in the database are sent when due, once, and
never after a cancel; a broker that refuses gets them back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.messaging.deliveries import DispatchError
from tasks.models import Delivery
from tasks.reliability.delayed import deliveries_send_due
from tasks.transaction import event_cancel, register_event
from tests.support.broker import broker_down
from tests.support.deliveries import ItemStored, async_handler
from tests.support.queues import purge_platform_queues, queued_messages
from tests.support.subscribed import subscribed_async

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def subscribed(redis_client):
    purge_platform_queues()
    with subscribed_async(ItemStored, [async_handler]):
        yield


def delayed(*, due_in: timedelta) -> Delivery:
    event = ItemStored(item_id=1)
    register_event(event, delay=due_in)
    return Delivery.objects.get(message_id=event.message_id)


def due(row: Delivery, *, ago: timedelta = timedelta(0)) -> None:
    Delivery.objects.filter(pk=row.pk).update(run_after=timezone.now() - ago)


def queued_ids(redis_client) -> list[str]:
    return [m["id"] for m in queued_messages(redis_client, "default")]


def test_a_due_time_already_past_is_sent_at_commit_as_usual():
    assert delayed(due_in=timedelta(seconds=-1)).status == Delivery.Status.PENDING


def test_a_delayed_delivery_is_not_published_at_commit(redis_client):
    row = delayed(due_in=timedelta(minutes=5))
    assert (row.status, row.sent_at, row.send_count) == (Delivery.Status.DELAYED, None, 0)
    assert row.run_after > timezone.now() + timedelta(minutes=4)
    assert deliveries_send_due() == 0
    assert queued_ids(redis_client) == []


def test_a_due_delivery_is_released_and_published_once(redis_client):
    row = delayed(due_in=timedelta(seconds=1))
    assert deliveries_send_due() == 0, "not yet due"
    due(row)
    assert deliveries_send_due() == 1
    row.refresh_from_db()
    assert (row.status, row.send_count) == (Delivery.Status.PENDING, 1) and row.sent_at is not None
    assert queued_ids(redis_client) == [row.task_id]
    assert deliveries_send_due() == 0, "released once"


def test_due_rows_go_earliest_first_in_batches():
    rows = [delayed(due_in=timedelta(minutes=1)) for _ in range(3)]
    for row, seconds in zip(rows, (1, 3, 2), strict=True):
        due(row, ago=timedelta(seconds=seconds))
    assert deliveries_send_due(limit=2) == 2
    released = set(Delivery.objects.filter(status=Delivery.Status.PENDING).values_list("pk", flat=True))
    assert released == {rows[1].pk, rows[2].pk}
    assert deliveries_send_due(limit=2) == 1


def test_a_cancelled_delivery_is_never_released(redis_client):
    row = delayed(due_in=timedelta(seconds=1))
    assert event_cancel(row.message_id) == 1
    due(row)
    assert deliveries_send_due() == 0
    row.refresh_from_db()
    assert row.status == Delivery.Status.CANCELLED and queued_ids(redis_client) == []


def test_a_broker_that_refuses_gets_the_batch_back_for_the_next_pass():
    row = delayed(due_in=timedelta(minutes=1))
    due(row)
    with broker_down(), pytest.raises(DispatchError):
        deliveries_send_due()
    row.refresh_from_db()
    assert (row.status, row.sent_at, row.send_count) == (Delivery.Status.DELAYED, None, 0)
    assert deliveries_send_due() == 1


def test_register_event_refuses_a_naive_due_time_and_two_of_them():
    with pytest.raises(ValueError, match="aware"):
        register_event(ItemStored(item_id=2), run_after=timezone.now().replace(tzinfo=None))
    with pytest.raises(TypeError, match="not both"):
        register_event(ItemStored(item_id=2), run_after=timezone.now(), delay=timedelta(seconds=1))
