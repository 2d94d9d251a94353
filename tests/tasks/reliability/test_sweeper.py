"""The re-send sweeper (``tasks.reliability.sweeper``): deliveries sent long ago and still not
done are sent again, oldest first, up to a limit; finished ones never are (DESIGN.md section 5).

What is sent is read back from the tests' Redis, as a worker would receive it.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.messaging.deliveries import DispatchError
from tasks.models import Delivery
from tasks.reliability.sweeper import deliveries_resend_stale
from tests.support.broker import broker_down
from tests.support.deliveries import delivery_row
from tests.support.queues import queued_messages

CUTOFF = timedelta(minutes=10)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("quick_confirmation")]


def queued_message_ids(redis_client, queue: str = "low") -> list[str]:
    return [sent["args"][0]["data"]["message_id"] for sent in queued_messages(redis_client, queue)]


# Moved from tests/tasks/messaging/test_relay.py (the relay's wiring of the sweeper stays there).
def test_a_delivery_is_resent_once_when_sent_long_ago_and_never_finished(redis_client, settings):
    stale_after = timedelta(seconds=settings.DELIVERY_RESEND_AFTER)
    stale = delivery_row(status=Delivery.Status.PENDING, sent_ago=stale_after * 2)
    delivery_row(status=Delivery.Status.DONE, sent_ago=stale_after * 2)
    delivery_row(status=Delivery.Status.RUNNING, sent_ago=timedelta(0))

    assert deliveries_resend_stale() == 1
    assert redis_client.llen("low") == 1
    assert queued_message_ids(redis_client, "low") == [str(stale.message_id)]
    stale.refresh_from_db()
    assert stale.send_count == 2
    assert stale.sent_at > timezone.now() - stale_after
    assert deliveries_resend_stale() == 0  # not again until it is stale again


def test_pending_and_running_deliveries_are_resent_when_sent_before_the_cutoff(redis_client):
    pending = delivery_row(status=Delivery.Status.PENDING, sent_ago=CUTOFF * 2)
    running = delivery_row(status=Delivery.Status.RUNNING, sent_ago=CUTOFF * 2, queue="high")
    before = timezone.now()

    assert deliveries_resend_stale(older_than=CUTOFF) == 2

    sent = queued_messages(redis_client, "low") + queued_messages(redis_client, "high")
    assert [(m["task"], m["id"], m["args"]) for m in sent] == [
        ("tasks.deliver", pending.task_id, [pending.payload, pending.handler]),
        ("tasks.deliver", running.task_id, [running.payload, running.handler]),
    ]
    for row in (pending, running):
        old_status = row.status
        row.refresh_from_db()
        assert (row.status, row.send_count) == (old_status, 2)  # re-sent, not re-stated
        assert row.sent_at >= before


def test_done_and_dead_deliveries_are_not_resent_when_sent_before_the_cutoff(redis_client):
    done = delivery_row(status=Delivery.Status.DONE, sent_ago=CUTOFF * 2)
    dead = delivery_row(status=Delivery.Status.DEAD, sent_ago=CUTOFF * 2)

    assert deliveries_resend_stale(older_than=CUTOFF) == 0

    assert redis_client.llen("low") == 0
    for row in (done, dead):
        sent_at = row.sent_at
        row.refresh_from_db()
        assert (row.send_count, row.sent_at) == (1, sent_at)


def test_recent_deliveries_are_not_resent_when_sent_after_the_cutoff(redis_client):
    recent = delivery_row(status=Delivery.Status.PENDING, sent_ago=CUTOFF / 2)

    assert deliveries_resend_stale(older_than=CUTOFF) == 0

    assert redis_client.llen("low") == 0
    recent.refresh_from_db()
    assert recent.send_count == 1


def test_the_cutoff_defaults_to_the_lost_check_setting_on_redis_when_none_is_given(redis_client, settings):
    # On Redis the broker is asked, so deliveries are looked for soon (DELIVERY_LOST_CHECK_AFTER);
    # DELIVERY_RESEND_AFTER is the RabbitMQ horizon (test_sweeper_presence.py).
    settings.DELIVERY_LOST_CHECK_AFTER = 3600
    delivery_row(status=Delivery.Status.PENDING, sent_ago=timedelta(minutes=30))
    assert deliveries_resend_stale() == 0

    settings.DELIVERY_LOST_CHECK_AFTER = 600
    assert deliveries_resend_stale() == 1


def test_the_oldest_deliveries_are_resent_first_when_more_than_the_limit_are_stale(redis_client):
    # Created in one order, aged in another: the sweeper must follow sent_at, not the pk.
    middle = delivery_row(status=Delivery.Status.PENDING, sent_ago=CUTOFF * 3)
    newest = delivery_row(status=Delivery.Status.RUNNING, sent_ago=CUTOFF * 2)
    oldest = delivery_row(status=Delivery.Status.PENDING, sent_ago=CUTOFF * 4)

    assert deliveries_resend_stale(older_than=CUTOFF, limit=2) == 2
    assert queued_message_ids(redis_client) == [str(oldest.message_id), str(middle.message_id)]
    newest.refresh_from_db()
    assert newest.send_count == 1

    assert deliveries_resend_stale(older_than=CUTOFF, limit=2) == 1
    assert queued_message_ids(redis_client)[-1] == str(newest.message_id)


def test_stale_deliveries_stay_stale_when_the_broker_is_down(redis_client):
    stale = delivery_row(status=Delivery.Status.PENDING, sent_ago=CUTOFF * 2)

    with broker_down(), pytest.raises(DispatchError):
        deliveries_resend_stale(older_than=CUTOFF)

    stale.refresh_from_db()
    assert stale.send_count == 1  # not counted as sent: the next pass tries it again
    assert stale.sent_at < timezone.now() - CUTOFF
    assert deliveries_resend_stale(older_than=CUTOFF) == 1
    assert queued_message_ids(redis_client) == [str(stale.message_id)]
