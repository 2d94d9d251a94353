"""The per-process publisher (``tasks.messaging.publisher``): a commit hands its deliveries to a
thread and returns; the thread sends what it was handed in batches and marks the outbox rows
sent; what it cannot send is left to the relay and sweeper, never retried from memory.

The Publisher's own behaviour is tested with injected send and mark steps; what reaches the
broker is read back from the tests' Redis. The bound on a commit with a hung broker is measured
with real processes in ``tests/e2e/test_commit_with_broker_faults.py``.
"""

import threading

import pytest
from django.db import transaction

from tasks.messaging.deliveries import DispatchError, deliveries_build
from tasks.messaging.publisher import (
    Publisher,
    deliveries_record_and_publish,
    outbox_mark_sent,
    publisher_flush,
    publisher_submit,
)
from tasks.messaging.subscriptions import Subscription
from tasks.models import Delivery, Outbox
from tests.support.broker import broker_down
from tests.support.deliveries import ItemStored, async_handler
from tests.support.queues import queued_messages

QUEUES = ("high", "default", "low")


def notify_owner(message):
    """A second async handler of the same message; it never runs here either."""


def subscription(handler, queue: str = "default") -> Subscription:
    return Subscription(ItemStored, handler, is_async=True, queue_name=queue)


def queued_task_ids(redis_client) -> list[str]:
    return [sent["id"] for queue in QUEUES for sent in queued_messages(redis_client, queue)]


def rows(count: int) -> list[Delivery]:
    return deliveries_build([(ItemStored(item_id=i), subscription(async_handler)) for i in range(count)])


class Steps:
    """Injected send and mark steps: what the thread did, and a gate to hold a send."""

    def __init__(self, *, fail: bool = False) -> None:
        self.sent: list[list[Delivery]] = []
        self.marked: list[list[int]] = []
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def send(self, deliveries: list[Delivery]) -> None:
        self.entered.set()
        self.gate.wait(10)
        if self.fail:
            raise DispatchError("broker down")
        self.sent.append(list(deliveries))

    def mark(self, ids: list[int]) -> None:
        self.marked.append(list(ids))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def hold_first_send(publisher: Publisher, steps: Steps, *, outbox_id: int) -> None:
    """Submit one commit and keep the thread inside its send until ``steps.gate`` is set."""
    steps.gate.clear()
    publisher.submit(outbox_id=outbox_id, deliveries=rows(1))
    assert steps.entered.wait(5)


def make(steps: Steps, **options) -> Publisher:
    return Publisher(send=steps.send, mark_sent=steps.mark, **options)


# --- Publisher --------------------------------------------------------------------------------------


def test_what_a_commit_hands_over_is_sent_and_its_outbox_row_marked():
    steps = Steps()
    publisher = make(steps)
    deliveries = rows(2)

    assert publisher.submit(outbox_id=7, deliveries=deliveries)
    assert publisher.close(5)

    assert steps.sent == [deliveries]
    assert steps.marked == [[7]]


def test_commits_handed_over_while_a_send_is_under_way_go_out_together_in_the_next_batch():
    steps = Steps()
    publisher = make(steps)
    hold_first_send(publisher, steps, outbox_id=1)
    later = [rows(1) for _ in range(3)]
    for offset, deliveries in enumerate(later):
        publisher.submit(outbox_id=2 + offset, deliveries=deliveries)
    steps.gate.set()
    assert publisher.close(5)

    assert [len(batch) for batch in steps.sent] == [1, 3]
    assert steps.marked == [[1], [2, 3, 4]]


def test_a_batch_takes_whole_commits_up_to_the_batch_size():
    steps = Steps()
    publisher = make(steps, batch_size=4)
    hold_first_send(publisher, steps, outbox_id=0)
    for outbox_id in (1, 2, 3):
        publisher.submit(outbox_id=outbox_id, deliveries=rows(3))  # 3 + 3 reach the size: 2 commits
    steps.gate.set()
    assert publisher.close(5)

    assert [len(batch) for batch in steps.sent] == [1, 6, 3]
    assert steps.marked == [[0], [1, 2], [3]]


def test_an_event_with_no_async_delivery_is_only_marked():
    steps = Steps()
    publisher = make(steps)
    publisher.submit(outbox_id=9, deliveries=[])
    assert publisher.close(5)
    assert (steps.sent, steps.marked) == ([], [[9]])


def test_a_failed_send_leaves_the_batch_and_the_queue_behind_it_unmarked_and_pauses_submits():
    steps, clock = Steps(fail=True), Clock()
    publisher = make(steps, clock=clock, backoff_max=8)
    hold_first_send(publisher, steps, outbox_id=1)
    publisher.submit(outbox_id=2, deliveries=rows(1))
    steps.gate.set()
    assert publisher.flush(5)

    assert steps.marked == []  # both wait in the outbox for the relay
    assert publisher.dropped == 2
    assert not publisher.submit(outbox_id=3, deliveries=rows(1))  # paused: straight to the relay
    clock.now += 1.01
    steps.fail = False
    assert publisher.submit(outbox_id=4, deliveries=rows(1))
    assert publisher.close(5)
    assert steps.marked == [[4]]


def test_the_pause_doubles_with_each_failure_up_to_the_maximum_and_resets_after_a_send():
    steps, clock = Steps(fail=True), Clock()
    publisher = make(steps, clock=clock, backoff_max=3)
    pauses = []
    for _ in range(4):
        start = clock.now
        assert publisher.submit(outbox_id=1, deliveries=rows(1))
        assert publisher.flush(5)
        while not publisher.submit(outbox_id=None, deliveries=[]) and clock.now - start < 10:
            clock.now += 0.25
        pauses.append(clock.now - start)
        publisher.flush(5)
    assert pauses == [1.0, 2.0, 3.0, 3.0]
    publisher.close(5)


def test_a_full_queue_leaves_new_commits_to_the_relay_instead_of_growing():
    steps = Steps()
    publisher = make(steps, queue_limit=3)
    hold_first_send(publisher, steps, outbox_id=0)

    assert publisher.submit(outbox_id=1, deliveries=rows(2))
    assert not publisher.submit(outbox_id=2, deliveries=rows(2))  # 2 + 2 > 3
    assert publisher.submit(outbox_id=3, deliveries=rows(1))
    steps.gate.set()
    assert publisher.close(5)
    assert [i for ids in steps.marked for i in ids] == [0, 1, 3]


def test_flush_times_out_while_a_send_hangs_and_submit_never_waits_for_it():
    steps = Steps()
    publisher = make(steps)
    hold_first_send(publisher, steps, outbox_id=1)

    assert not publisher.flush(0.2)
    assert publisher.submit(outbox_id=2, deliveries=rows(1))  # returns although the send hangs
    steps.gate.set()
    assert publisher.close(5)


def test_a_failed_mark_is_logged_and_the_thread_goes_on(caplog):
    steps = Steps()

    def mark(ids):
        if ids == [1]:
            raise RuntimeError("database gone")
        steps.marked.append(ids)

    publisher = Publisher(send=steps.send, mark_sent=mark)
    publisher.submit(outbox_id=1, deliveries=rows(1))
    publisher.flush(5)
    publisher.submit(outbox_id=2, deliveries=rows(1))
    assert publisher.close(5)
    assert steps.marked == [[2]]
    assert "marking 1 outbox rows sent failed" in caplog.text


def test_a_closed_publisher_takes_nothing_more():
    publisher = make(Steps())
    assert publisher.close(5)
    assert not publisher.submit(outbox_id=1, deliveries=[])


# --- with the database and the tests' Redis ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_outbox_mark_sent_marks_the_given_rows_and_accepts_none():
    first, second = (Outbox.objects.create(message_id=ItemStored(item_id=i).message_id, payload={}) for i in (1, 2))
    outbox_mark_sent(outbox_ids=[])
    outbox_mark_sent(outbox_ids=[first.pk])
    assert Outbox.objects.get(pk=first.pk).sent_at is not None
    assert Outbox.objects.get(pk=second.pk).sent_at is None


@pytest.mark.django_db(transaction=True)
def test_the_process_publisher_puts_what_it_is_handed_on_the_broker(redis_client):
    deliveries = deliveries_build([(ItemStored(item_id=1), subscription(async_handler, "high"))])
    assert publisher_submit(outbox_id=None, deliveries=deliveries)
    assert publisher_flush(5)
    assert queued_task_ids(redis_client) == [deliveries[0].task_id]


@pytest.mark.django_db(transaction=True)
def test_deliveries_are_published_only_after_commit_when_recorded_inside_a_transaction(redis_client):
    message = ItemStored(item_id=1)
    with transaction.atomic():
        count = deliveries_record_and_publish(
            [(message, subscription(async_handler, "low")), (message, subscription(notify_owner))]
        )
        assert count == 2
        publisher_flush(5)
        assert queued_task_ids(redis_client) == []

    publisher_flush(5)
    assert sorted(queued_task_ids(redis_client)) == sorted(row.task_id for row in Delivery.objects.all())


@pytest.mark.django_db(transaction=True)
def test_nothing_is_published_or_kept_when_the_transaction_rolls_back(redis_client):
    with pytest.raises(LookupError), transaction.atomic():
        deliveries_record_and_publish([(ItemStored(item_id=1), subscription(async_handler))])
        raise LookupError
    publisher_flush(5)
    assert queued_task_ids(redis_client) == []
    assert not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_deliveries_are_published_at_once_when_recorded_outside_a_transaction(redis_client):
    assert deliveries_record_and_publish([(ItemStored(item_id=1), subscription(async_handler, "high"))]) == 1
    assert queued_task_ids(redis_client) == [Delivery.objects.get().task_id]


@pytest.mark.django_db(transaction=True)
def test_nothing_is_recorded_or_published_when_no_subscription_wants_the_message(redis_client):
    assert deliveries_record_and_publish([]) == 0
    assert queued_task_ids(redis_client) == []


@pytest.mark.django_db(transaction=True)
def test_the_commit_succeeds_and_the_rows_stay_pending_when_the_broker_is_down_at_commit(redis_client):
    with broker_down(), transaction.atomic():
        deliveries_record_and_publish([(ItemStored(item_id=1), subscription(async_handler))])
    assert Delivery.objects.get().status == Delivery.Status.PENDING  # for the sweeper
    assert queued_task_ids(redis_client) == []


@pytest.mark.django_db(transaction=True)
def test_dispatch_error_is_raised_after_recording_when_the_broker_is_down_outside_a_transaction(redis_client):
    with broker_down(), pytest.raises(DispatchError):
        deliveries_record_and_publish([(ItemStored(item_id=1), subscription(async_handler))])
    assert Delivery.objects.get().status == Delivery.Status.PENDING
