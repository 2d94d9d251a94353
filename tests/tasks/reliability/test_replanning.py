"""A predicate that raises never drops its event for that handler (issue 14 item 5): the delivery
is recorded unplanned with the error, by register_event and by the relay, and the relay plans it
again: true -> pending and sent; false -> removed; error -> counted, and after the cap a dead letter."""

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.bus import MemoryBroker, override_message_broker
from tasks.messages import Message
from tasks.messaging.relay import outbox_relay_once
from tasks.models import DeadLetter, Delivery, Outbox
from tasks.reliability.replanning import deliveries_replan
from tasks.transaction import register_event
from tests.support.queues import queued_messages

MODULE = __name__

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class ItemStored(Message):
    item_id: int


answer: dict[str, object] = {}


def picky(message: ItemStored) -> bool:
    """The predicate under test: answers what ``answer["value"]`` says, or raises it."""
    value = answer["value"]
    if isinstance(value, Exception):
        raise value
    return bool(value)


def picky_handler(message):
    """Never runs here: only its delivery is sent."""


def plain_handler(message):
    """Never runs here: only its delivery is sent."""


@pytest.fixture
def broker():
    answer["value"] = RuntimeError("predicate broke")
    broker = MemoryBroker()
    broker.subscribe_async(ItemStored, picky_handler, predicate=picky)
    broker.subscribe_async(ItemStored, plain_handler)
    with override_message_broker(broker):
        yield broker


def picky_delivery() -> Delivery:
    return Delivery.objects.get(handler=f"{MODULE}.picky_handler")


def sent_handlers(redis_client) -> list[str]:
    return [m["args"][1] for m in queued_messages(redis_client, "default")]


def due_now(row: Delivery) -> None:
    Delivery.objects.filter(pk=row.pk).update(sent_at=timezone.now() - timedelta(seconds=1))


def test_register_event_records_an_unplanned_delivery_with_the_error_when_a_predicate_raises(broker, redis_client):
    register_event(ItemStored(item_id=1))
    unplanned = picky_delivery()
    assert unplanned.status == Delivery.Status.UNPLANNED
    assert "predicate broke" in unplanned.last_error
    assert unplanned.attempts == 1
    assert sent_handlers(redis_client) == [f"{MODULE}.plain_handler"]  # the other handler is not held up


def test_the_relay_records_an_unplanned_delivery_when_a_predicate_raises(broker, redis_client):
    message = ItemStored(item_id=1)
    row = Outbox.objects.create(
        message_id=message.message_id, message_type=message.message_name, payload=message.to_json()
    )
    Outbox.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    assert outbox_relay_once(grace=timedelta(seconds=5)) == 1
    assert picky_delivery().status == Delivery.Status.UNPLANNED
    assert sent_handlers(redis_client) == [f"{MODULE}.plain_handler"]


def test_an_unplanned_delivery_is_sent_when_its_predicate_answers_true(broker, redis_client):
    register_event(ItemStored(item_id=1))
    answer["value"] = True
    assert deliveries_replan() == 1
    planned = picky_delivery()
    assert (planned.status, planned.last_error, planned.send_count) == (Delivery.Status.PENDING, "", 1)
    # The plain handler's delivery goes out from the publisher thread, in any order with this one.
    assert sent_handlers(redis_client).count(f"{MODULE}.picky_handler") == 1
    assert deliveries_replan() == 0  # planned once


def test_an_unplanned_delivery_is_removed_when_its_predicate_answers_false(broker, redis_client):
    register_event(ItemStored(item_id=1))
    answer["value"] = False
    assert deliveries_replan() == 0
    assert not Delivery.objects.filter(handler=f"{MODULE}.picky_handler").exists()
    assert sent_handlers(redis_client) == [f"{MODULE}.plain_handler"]


def test_an_unplanned_delivery_waits_with_backoff_and_counts_each_new_error(broker, redis_client):
    register_event(ItemStored(item_id=1))
    answer["value"] = RuntimeError("still broken")
    assert deliveries_replan() == 0
    row = picky_delivery()
    assert (row.status, row.attempts) == (Delivery.Status.UNPLANNED, 2)
    assert "still broken" in row.last_error
    assert row.sent_at > timezone.now()  # backed off
    assert deliveries_replan() == 0
    assert picky_delivery().attempts == 2  # not due yet: not asked again


def test_an_unplanned_delivery_becomes_a_dead_letter_with_the_error_after_the_cap(broker, redis_client, settings):
    settings.RELAY_ROW_MAX_FAILURES = 3
    register_event(ItemStored(item_id=1))
    for _ in range(2):
        due_now(picky_delivery())
        deliveries_replan()
    row = picky_delivery()
    assert row.status == Delivery.Status.DEAD
    dead = DeadLetter.objects.get(message_id=row.message_id, handler=row.handler)
    assert (dead.reason, dead.attempts) == ("predicate failed", 3)
    assert "predicate broke" in dead.exception_message
    assert sent_handlers(redis_client) == [f"{MODULE}.plain_handler"]


def test_an_unplanned_delivery_whose_handler_is_no_longer_subscribed_counts_a_failure(broker, redis_client):
    register_event(ItemStored(item_id=1))
    broker._subscriptions[:] = [s for s in broker._subscriptions if s.handler is not picky_handler]
    due_now(picky_delivery())
    assert deliveries_replan() == 0
    row = picky_delivery()
    assert (row.status, row.attempts) == (Delivery.Status.UNPLANNED, 2)
    assert "not subscribed" in row.last_error
