"""Unique jobs and debounce: one waiting delivery per handler and key, held by the database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from tasks.bus import get_message_broker
from tasks.messaging.flow_limit_overrides import flow_limit_overrides_forget
from tasks.messaging.publisher import publisher_flush
from tasks.messaging.subscriptions import SubscriptionError
from tasks.models import Delivery, FlowLimit
from tasks.transaction import register_event
from tests.support.queues import purge_platform_queues, queued_messages
from tests.support.unique_handlers import (
    DEBOUNCE_SECONDS,
    NOTIFY_HANDLER,
    REINDEX_HANDLER,
    ProfileEdited,
    ReindexRequested,
    reindex,
    request_reindex_concurrently,
    subscribed,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def unique_handlers(redis_client):
    purge_platform_queues()
    with subscribed():
        yield


def test_requests_within_the_window_are_dropped_and_only_the_first_is_sent(redis_client):
    for n in range(5):
        register_event(ReindexRequested(component_id=7, note=str(n)))
    register_event(ReindexRequested(component_id=8))  # another key
    rows = Delivery.objects.filter(handler=REINDEX_HANDLER).order_by("pk")
    assert [(r.unique_key, r.payload["data"]["note"]) for r in rows] == [("reindex:7", "0"), ("reindex:8", "")]
    assert publisher_flush(10)
    assert sorted(m["args"][0]["data"]["component_id"] for m in queued_messages(redis_client, "default")) == [7, 8]


@pytest.mark.parametrize("status", [Delivery.Status.RUNNING, Delivery.Status.DONE])
def test_the_key_is_held_for_the_window_whatever_the_first_delivery_does_then_taken_over(status):
    register_event(ReindexRequested(component_id=7))
    Delivery.objects.filter(handler=REINDEX_HANDLER).update(status=status)
    register_event(ReindexRequested(component_id=7, note="in the window"))
    assert Delivery.objects.filter(handler=REINDEX_HANDLER).count() == 1
    Delivery.objects.filter(handler=REINDEX_HANDLER).update(unique_until=timezone.now() - timedelta(seconds=1))
    register_event(ReindexRequested(component_id=7, note="after the window"))
    rows = Delivery.objects.filter(handler=REINDEX_HANDLER).order_by("pk")
    assert [(r.unique_key, r.payload["data"]["note"]) for r in rows] == [("", ""), ("reindex:7", "after the window")]


def test_a_rolled_back_request_leaves_the_key_free():
    with pytest.raises(RuntimeError), transaction.atomic():
        register_event(ReindexRequested(component_id=7))
        raise RuntimeError
    register_event(ReindexRequested(component_id=7, note="kept"))
    assert Delivery.objects.get(handler=REINDEX_HANDLER).payload["data"]["note"] == "kept"


def test_debounced_requests_leave_one_delayed_delivery_with_the_last_message():
    events = [ProfileEdited(author_id=3, revision=n) for n in range(4)]
    for event in events:
        register_event(event)
    row = Delivery.objects.get(handler=NOTIFY_HANDLER)
    assert (row.status, row.message_id, row.payload["data"]["revision"]) == (
        Delivery.Status.DELAYED,
        events[-1].message_id,
        3,
    )
    assert row.run_after > timezone.now() + timedelta(seconds=DEBOUNCE_SECONDS - 1)
    # Released (due), a new request delays another.
    Delivery.objects.filter(pk=row.pk).update(status=Delivery.Status.PENDING)
    register_event(ProfileEdited(author_id=3, revision=9))
    assert Delivery.objects.filter(handler=NOTIFY_HANDLER).count() == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
def test_fifty_concurrent_requests_with_one_key_record_one_delivery():
    request_reindex_concurrently(component_id=42, requests=50)
    assert Delivery.objects.filter(handler=REINDEX_HANDLER, unique_key="reindex:42").count() == 1


def test_a_unique_declaration_needs_its_key_function():
    broker = get_message_broker()
    with pytest.raises(SubscriptionError, match="need unique="):
        broker.subscribe_async(ReindexRequested, reindex, unique_for=timedelta(seconds=1))
    with pytest.raises(SubscriptionError, match="needs unique_for"):
        broker.subscribe_async(ReindexRequested, reindex, unique=lambda e: "k", debounce=True)


def test_an_operators_override_of_the_window_applies_to_the_next_request():
    FlowLimit.objects.create(handler=REINDEX_HANDLER, unique_for=timedelta(seconds=30))
    flow_limit_overrides_forget()
    try:
        register_event(ReindexRequested(component_id=9))
    finally:
        flow_limit_overrides_forget()
    held_for = Delivery.objects.get(handler=REINDEX_HANDLER).unique_until - timezone.now()
    assert timedelta(seconds=20) < held_for <= timedelta(seconds=30), "the override's 30 s, not the code's 5 min"
