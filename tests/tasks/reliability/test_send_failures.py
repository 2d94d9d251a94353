"""A stale delivery the broker refuses for itself fails alone in the sweeper: the others are sent,
its error is kept, it is tried again later, and after the cap it is a dead letter (issue 14 item 8)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.models import DeadLetter, Delivery
from tasks.reliability.sweeper import deliveries_resend_stale
from tests.support.deliveries import delivery_row

CUTOFF = timedelta(minutes=1)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("quick_confirmation")]


def test_a_delivery_the_broker_refuses_fails_alone_and_the_sweeper_gets_past_it(redis_client):
    # Oldest first, and the oldest is the bad one: the one behind it is sent all the same.
    bad = delivery_row(queue="retired", sent_ago=timedelta(minutes=20))
    good = delivery_row(queue="low")

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
    bad = delivery_row(queue="retired")
    for failures in range(1, 4):
        Delivery.objects.filter(pk=bad.pk).update(sent_at=timezone.now() - timedelta(minutes=10))  # due again
        assert deliveries_resend_stale(older_than=CUTOFF) == 0
        bad.refresh_from_db()
        assert bad.attempts == failures

    assert bad.status == Delivery.Status.DEAD
    dead = DeadLetter.objects.get(message_id=bad.message_id)
    assert (dead.reason, dead.handler, dead.attempts) == ("send failed", bad.handler, 3)
    assert "retired" in dead.exception_message
