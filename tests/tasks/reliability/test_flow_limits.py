"""Flow limits, worker side and relay side: a job over its rate or concurrency limit waits in the
database (never failed, never run), in order; the relay's waiting pass releases what the limits
allow, never a cancelled one, and gives a release the broker refused back to waiting."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.messaging.brokers import async_subscription_by_handler
from tasks.messaging.deliveries import DispatchError
from tasks.messaging.flow_limit_overrides import flow_limit_overrides_forget
from tasks.models import Delivery, FlowLimit
from tasks.reliability.delivery_state import deliveries_cancel
from tasks.reliability.flow_limits import deliveries_release_allowed, delivery_admit, delivery_slot_free
from tasks.transaction import register_event
from tests.support.broker import broker_down
from tests.support.flow_limit_handlers import (
    NOTIFY_HANDLER,
    PING_HANDLER,
    RECOUNT_HANDLER,
    SCAN_HANDLER,
    AuthorRated,
    PartnerNotified,
    Pinged,
    ScanRequested,
)
from tests.support.publisher import publisher_reset
from tests.support.queues import purge_platform_queues, queued_messages

pytestmark = pytest.mark.django_db(transaction=True)
Status = Delivery.Status


@pytest.fixture(autouse=True)
def limited(redis_client, flow_limited_handlers):
    purge_platform_queues()


def recorded(event, handler: str) -> Delivery:
    register_event(event)
    return Delivery.objects.get(message_id=event.message_id, handler=handler)


def admit(event, handler: str) -> bool:
    return delivery_admit(message=event, subscription=async_subscription_by_handler(handler), handler=handler)


def status(event, handler: str) -> Delivery:
    return Delivery.objects.get(message_id=event.message_id, handler=handler)


def queued_ids(redis_client, queue: str = "default") -> set[str]:
    return {m["id"] for m in queued_messages(redis_client, queue)}


def scans(author_id: int, count: int) -> list[ScanRequested]:
    events = [ScanRequested(author_id=author_id, n=n) for n in range(count)]
    for event in events:
        recorded(event, SCAN_HANDLER)
    return events


def test_a_concurrency_limit_admits_up_to_its_slots_per_key_and_makes_the_rest_wait_in_order():
    first, second, third, fourth = scans(1, 4)
    (other,) = scans(2, 1)

    assert admit(first, SCAN_HANDLER) and admit(second, SCAN_HANDLER)
    assert not admit(third, SCAN_HANDLER)
    assert admit(other, SCAN_HANDLER), "another key has its own slots"
    row = status(third, SCAN_HANDLER)
    assert (row.status, row.run_after, row.concurrency_key) == (Status.WAITING, None, "author:1")

    Delivery.objects.filter(pk=status(first, SCAN_HANDLER).pk).update(status=Status.DONE)
    assert not admit(fourth, SCAN_HANDLER), "a slot is free, but an earlier job of the key waits for it"


def test_a_running_delivery_delivered_again_keeps_its_own_slot():
    first, second = scans(1, 2)
    assert admit(first, SCAN_HANDLER) and admit(second, SCAN_HANDLER)
    assert admit(first, SCAN_HANDLER), "a redelivered copy (its worker was killed) is not a third job"


def test_a_finished_or_cancelled_delivery_is_admitted_for_delivery_start_to_skip():
    (event,) = scans(1, 1)
    Delivery.objects.filter(message_id=event.message_id).update(status=Status.DONE)
    assert admit(event, SCAN_HANDLER)
    assert status(event, SCAN_HANDLER).status == Status.DONE


def test_the_waiting_pass_releases_a_keys_waiting_jobs_oldest_first_as_slots_free(redis_client):
    first, second, third, fourth = scans(1, 4)
    for event in (first, second, third, fourth):
        admit(event, SCAN_HANDLER)
    publisher_reset()  # the commits' sends are made by the publisher thread, maybe after a purge
    purge_platform_queues()
    assert deliveries_release_allowed() == 0, "both slots are taken"

    Delivery.objects.filter(pk=status(first, SCAN_HANDLER).pk).update(status=Status.DONE)
    assert deliveries_release_allowed() == 1
    assert status(third, SCAN_HANDLER).status == Status.PENDING
    assert status(fourth, SCAN_HANDLER).status == Status.WAITING
    assert queued_ids(redis_client) == {status(third, SCAN_HANDLER).task_id}
    assert deliveries_release_allowed() == 0, "released and not started yet: its slot is taken"


def test_a_finished_job_hands_its_slot_to_the_next_waiting_one_of_its_key_at_once(redis_client):
    first, second, third, fourth = scans(1, 4)
    for event in (first, second, third, fourth):
        admit(event, SCAN_HANDLER)
    purge_platform_queues()
    Delivery.objects.filter(pk=status(first, SCAN_HANDLER).pk).update(status=Status.DONE)

    delivery_slot_free(message=first, subscription=async_subscription_by_handler(SCAN_HANDLER), handler=SCAN_HANDLER)

    assert status(third, SCAN_HANDLER).status == Status.PENDING, "released without waiting for the relay"
    assert status(fourth, SCAN_HANDLER).status == Status.WAITING
    assert queued_ids(redis_client) == {status(third, SCAN_HANDLER).task_id}


def test_a_rate_limit_makes_the_job_past_it_wait_until_its_window_has_room():
    events = [AuthorRated(author_id=1, n=n) for n in range(3)]
    for event in events:
        recorded(event, RECOUNT_HANDLER)
    assert admit(events[0], RECOUNT_HANDLER) and admit(events[1], RECOUNT_HANDLER)
    assert not admit(events[2], RECOUNT_HANDLER)
    row = status(events[2], RECOUNT_HANDLER)
    assert (row.status, row.rate_key, row.attempts) == (Status.WAITING, "author:1", 0)
    assert timezone.now() + timedelta(seconds=50) < row.run_after <= timezone.now() + timedelta(seconds=61)

    other = AuthorRated(author_id=2, n=0)
    recorded(other, RECOUNT_HANDLER)
    assert admit(other, RECOUNT_HANDLER), "another key has its own window"


def test_the_waiting_pass_releases_a_rate_limited_job_when_due_and_one_period_of_them_at_a_time(redis_client):
    events = [AuthorRated(author_id=1, n=n) for n in range(5)]
    for event in events:
        recorded(event, RECOUNT_HANDLER)
        admit(event, RECOUNT_HANDLER)
    assert deliveries_release_allowed() == 0, "not due"
    Delivery.objects.filter(status=Status.WAITING).update(run_after=timezone.now())
    purge_platform_queues()

    assert deliveries_release_allowed() == 2, "one period's worth (2/minute)"
    assert [status(e, RECOUNT_HANDLER).status for e in events[2:]] == [Status.PENDING, Status.PENDING, Status.WAITING]
    assert status(events[4], RECOUNT_HANDLER).run_after > timezone.now() + timedelta(seconds=50), "the next period"
    assert len(queued_ids(redis_client)) == 2


def test_the_rate_store_down_makes_the_job_wait_instead_of_failing(settings):
    settings.FLOW_LIMITS_REDIS_URL = "redis://127.0.0.1:1/0"
    settings.FLOW_LIMITS_UNAVAILABLE_WAIT = 7
    event = PartnerNotified(n=1)
    recorded(event, NOTIFY_HANDLER)
    assert not admit(event, NOTIFY_HANDLER)
    row = status(event, NOTIFY_HANDLER)
    assert row.status == Status.WAITING
    assert timezone.now() + timedelta(seconds=5) < row.run_after <= timezone.now() + timedelta(seconds=7)


def test_a_cancelled_waiting_job_is_never_released():
    first, second, third = scans(1, 3)
    for event in (first, second, third):
        admit(event, SCAN_HANDLER)
    assert deliveries_cancel(deliveries=Delivery.objects.filter(message_id=third.message_id)) == 1
    Delivery.objects.filter(status=Status.RUNNING).update(status=Status.DONE)
    assert deliveries_release_allowed() == 0
    assert status(third, SCAN_HANDLER).status == Status.CANCELLED


def test_a_release_the_broker_refuses_waits_again():
    first, second, third = scans(1, 3)
    for event in (first, second, third):
        admit(event, SCAN_HANDLER)
    Delivery.objects.filter(status=Status.RUNNING).update(status=Status.DONE)
    with broker_down(), pytest.raises(DispatchError):
        deliveries_release_allowed()
    row = status(third, SCAN_HANDLER)
    assert (row.status, row.sent_at) == (Status.WAITING, None)


def test_an_override_lifting_the_limit_releases_every_waiting_job():
    events = scans(1, 5)
    for event in events:
        admit(event, SCAN_HANDLER)
    FlowLimit.objects.create(handler=SCAN_HANDLER, concurrency=0)
    flow_limit_overrides_forget()
    assert deliveries_release_allowed() == 3
    assert admit(events[4], SCAN_HANDLER), "no limit any more"


def test_an_override_lowers_the_codes_limit():
    FlowLimit.objects.create(handler=SCAN_HANDLER, concurrency=1)
    flow_limit_overrides_forget()
    first, second = scans(3, 2)
    assert admit(first, SCAN_HANDLER)
    assert not admit(second, SCAN_HANDLER)


def test_an_override_limits_a_handler_the_code_left_unlimited():
    FlowLimit.objects.create(handler=PING_HANDLER, rate_limit="1/minute")
    flow_limit_overrides_forget()
    first, second = Pinged(n=1), Pinged(n=2)
    recorded(first, PING_HANDLER)
    recorded(second, PING_HANDLER)
    assert admit(first, PING_HANDLER)
    assert not admit(second, PING_HANDLER)
