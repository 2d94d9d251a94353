"""Deliveries (``tasks.messaging.deliveries``): one pending Delivery row per (message, async
subscription), recorded before its ``tasks.deliver`` task is published; publishing waits for
the commit, never blocks on a broker that is down, and gets past a dead pooled connection
(DESIGN.md section 5).

What is published is read back from the tests' Redis, as a worker would receive it.
"""

import logging
import os
import uuid
from dataclasses import dataclass

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks.messages import Message
from tasks.messaging import deliveries as dispatch
from tasks.messaging.deliveries import (
    DELIVER_TASK,
    DispatchError,
    deliveries_build,
    deliveries_publish,
    deliveries_record,
)
from tasks.messaging.subscriptions import Subscription
from tasks.models import Delivery
from tests.support.broker import broker_down
from tests.support.queues import queued_messages

MODULE = __name__
QUEUES = ("high", "default", "low")


@dataclass(frozen=True)
class ItemStored(Message):
    item_id: int


def index_item(message):
    """An async handler; it never runs here (no worker), only its delivery is sent."""


def notify_owner(message):
    """Another async handler of the same message."""


def subscription(handler, queue: str = "default") -> Subscription:
    return Subscription(ItemStored, handler, is_async=True, queue_name=queue)


@pytest.fixture
def pool_restored():
    """Put the process's producer pool back after a test that replaces it, closing any it made."""
    saved = dispatch._pool
    yield
    if dispatch._pool is not None and dispatch._pool is not saved:
        dispatch._pool[1].connections.force_close_all()
    dispatch._pool = saved


def all_queued(redis_client) -> dict[str, list[dict]]:
    return {queue: queued_messages(redis_client, queue) for queue in QUEUES}


def queued_task_ids(redis_client) -> list[str]:
    return [sent["id"] for queue in QUEUES for sent in queued_messages(redis_client, queue)]


# --- deliveries_build and deliveries_record -----------------------------------------------------------


def test_one_pending_delivery_is_built_per_message_and_subscription_when_a_plan_is_given():
    first, second = ItemStored(item_id=1), ItemStored(item_id=2)
    before = timezone.now()

    rows = deliveries_build(
        [
            (first, subscription(index_item, "low")),
            (first, subscription(notify_owner)),
            (second, subscription(index_item, "low")),
        ]
    )

    assert [(row.message_id, row.handler, row.queue) for row in rows] == [
        (first.message_id, f"{MODULE}.index_item", "low"),
        (first.message_id, f"{MODULE}.notify_owner", "default"),
        (second.message_id, f"{MODULE}.index_item", "low"),
    ]
    for row, message in zip(rows, (first, first, second), strict=True):
        assert row.pk is None  # built, not saved
        assert (row.status, row.send_count) == (Delivery.Status.PENDING, 1)
        assert (row.message_type, row.payload) == (ItemStored.message_name, message.to_json())
        assert row.sent_at >= before
        uuid.UUID(row.task_id)
    assert len({row.task_id for row in rows}) == 3  # each delivery is its own task


def test_nothing_is_built_or_recorded_when_the_plan_is_empty(db):
    assert deliveries_build([]) == []
    with CaptureQueriesContext(connection) as queries:
        assert deliveries_record([]) == []
    assert len(queries) == 0


@pytest.mark.django_db
def test_the_built_rows_are_saved_when_a_plan_is_recorded():
    message = ItemStored(item_id=1)
    rows = deliveries_record([(message, subscription(index_item, "low")), (message, subscription(notify_owner))])
    saved = {row.handler: row for row in Delivery.objects.all()}
    assert set(saved) == {f"{MODULE}.index_item", f"{MODULE}.notify_owner"}
    for row in rows:
        assert (saved[row.handler].task_id, saved[row.handler].queue) == (row.task_id, row.queue)
        assert saved[row.handler].status == Delivery.Status.PENDING


@pytest.mark.django_db
def test_the_first_record_wins_when_a_delivery_is_recorded_twice():
    message = ItemStored(item_id=1)
    (first,) = deliveries_record([(message, subscription(index_item))])
    Delivery.objects.filter(task_id=first.task_id).update(status=Delivery.Status.DONE)

    (again,) = deliveries_record([(message, subscription(index_item, "low"))])

    assert again.task_id != first.task_id
    kept = Delivery.objects.get()
    assert (kept.task_id, kept.queue, kept.status) == (first.task_id, "default", Delivery.Status.DONE)


# --- deliveries_publish ---------------------------------------------------------------------------------


def test_one_deliver_task_per_row_is_put_on_the_rows_queue_when_rows_are_published(redis_client):
    first, second = ItemStored(item_id=1), ItemStored(item_id=2)
    rows = deliveries_build(
        [
            (first, subscription(index_item, "low")),
            (first, subscription(notify_owner, "high")),
            (second, subscription(index_item)),
        ]
    )

    deliveries_publish(rows)

    queued = all_queued(redis_client)
    assert {queue: len(sent) for queue, sent in queued.items()} == {"high": 1, "default": 1, "low": 1}
    for row in rows:
        (sent,) = queued[row.queue]
        assert (sent["task"], sent["id"]) == (DELIVER_TASK, row.task_id)
        assert (sent["args"], sent["kwargs"]) == ([row.payload, row.handler], {})
        assert sent["argsrepr"] == f"({ItemStored.message_name} {row.message_id}, {row.handler})"


def test_the_rows_are_published_in_order_when_several_share_a_queue(redis_client):
    rows = deliveries_build([(ItemStored(item_id=n), subscription(index_item)) for n in range(5)])
    deliveries_publish(rows)
    assert [sent["id"] for sent in queued_messages(redis_client, "default")] == [row.task_id for row in rows]


def test_a_single_row_is_published_when_it_is_the_only_one(redis_client):
    (row,) = deliveries_build([(ItemStored(item_id=1), subscription(index_item, "low"))])
    deliveries_publish([row])
    assert [sent["id"] for sent in queued_messages(redis_client, "low")] == [row.task_id]


def test_dispatch_error_is_raised_and_nothing_is_queued_when_the_broker_is_down(redis_client):
    rows = deliveries_build([(ItemStored(item_id=1), subscription(index_item))])
    with broker_down(), pytest.raises(DispatchError):
        deliveries_publish(rows)
    assert queued_task_ids(redis_client) == []


def test_a_new_pool_is_tried_once_when_the_pooled_connection_is_dead(redis_client, pool_restored, caplog):
    # A pool whose connections lead nowhere, as a broker restart leaves the idle ones; the
    # broker itself is up again.
    with broker_down():
        dead_pool = dispatch._producer_pool()
    dispatch._pool = (os.getpid(), dead_pool)
    caplog.set_level(logging.INFO, logger=dispatch.__name__)
    rows = deliveries_build([(ItemStored(item_id=1), subscription(index_item))])

    deliveries_publish(rows)

    assert queued_task_ids(redis_client) == [rows[0].task_id]
    assert dispatch._pool is not None and dispatch._pool[1] is not dead_pool  # the dead pool was dropped
    assert any(r.getMessage().startswith("published on a new broker connection after:") for r in caplog.records)


def test_publishing_is_tried_twice_only_when_the_broker_is_really_down(redis_client, pool_restored, monkeypatch):
    attempts = []
    publish = dispatch._publish

    def counted(rows):
        attempts.append(len(rows))
        return publish(rows)

    monkeypatch.setattr(dispatch, "_publish", counted)
    rows = deliveries_build([(ItemStored(item_id=1), subscription(index_item))])

    with broker_down(), pytest.raises(DispatchError):
        deliveries_publish(rows)

    assert attempts == [1, 1]
