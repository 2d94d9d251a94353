"""A stale delivery the broker refuses for itself fails alone in the sweeper: the others are sent,
its error is kept, it is tried again later, and after the cap it is a dead letter (issue 14 item 8)."""

import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.messages import Message
from tasks.models import DeadLetter, Delivery
from tasks.reliability.sweeper import deliveries_resend_stale

MODULE = __name__
CUTOFF = timedelta(minutes=1)

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class ItemStored(Message):
    item_id: int


def async_handler(message):
    """Never runs here: only its delivery is sent."""


@pytest.fixture(autouse=True)
def quick_confirmation(settings):
    settings.DELIVERY_LOST_CONFIRM_AFTER = 0.05


def lost_delivery(*, queue: str, sent_ago: timedelta = timedelta(minutes=10)) -> Delivery:
    message = ItemStored(item_id=1)
    return Delivery.objects.create(
        message_id=message.message_id,
        handler=f"{MODULE}.async_handler",
        message_type=message.message_name,
        payload=message.to_json(),
        queue=queue,
        task_id=str(uuid.uuid4()),
        sent_at=timezone.now() - sent_ago,
        send_count=1,
    )


def test_a_delivery_the_broker_refuses_fails_alone_and_the_sweeper_gets_past_it(redis_client):
    # Oldest first, and the oldest is the bad one: the one behind it is sent all the same.
    bad = lost_delivery(queue="retired", sent_ago=timedelta(minutes=20))
    good = lost_delivery(queue="low")

    assert deliveries_resend_stale(older_than=CUTOFF) == 1

    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.send_count == 2
    assert redis_client.llen("low") == 1
    assert (bad.status, bad.send_count, bad.attempts) == (Delivery.Status.PENDING, 1, 1)
    assert "retired" in bad.last_error
    assert bad.sent_at > timezone.now()  # backed off: not tried again at once


def test_a_delivery_the_broker_keeps_refusing_is_dead_lettered_after_the_cap(redis_client, settings):
    settings.RELAY_ROW_MAX_FAILURES = 3
    bad = lost_delivery(queue="retired")
    for failures in range(1, 4):
        Delivery.objects.filter(pk=bad.pk).update(sent_at=timezone.now() - timedelta(minutes=10))  # due again
        assert deliveries_resend_stale(older_than=CUTOFF) == 0
        bad.refresh_from_db()
        assert bad.attempts == failures

    assert bad.status == Delivery.Status.DEAD
    dead = DeadLetter.objects.get(message_id=bad.message_id)
    assert (dead.reason, dead.handler, dead.attempts) == ("send failed", bad.handler, 3)
    assert "retired" in dead.exception_message
