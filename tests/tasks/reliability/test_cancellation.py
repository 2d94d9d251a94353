"""Cooperative cancel: a cancel of a running delivery is a request its handler sees; stopping on
it rolls the work back and ends the delivery cancelled, never retried or dead-lettered."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tasks.jobs import JobCancelled, cancel_requested
from tasks.messages import Message
from tasks.models import DeadLetter, Delivery, DeliveryCancelRequest
from tasks.reliability.deliver import CANCELLED, DONE, delivery_run
from tasks.reliability.delivery_state import deliveries_cancel
from tests.support.deliveries import recorded_delivery
from tests.support.ledger.models import Effect
from tests.support.subscribed import subscribed_async

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class ReportRequested(Message):
    report_id: int


def build_report(message: ReportRequested) -> None:
    Effect.objects.create(key=f"report-{message.report_id}")
    if cancel_requested():
        raise JobCancelled("stopped by an operator")


HANDLER = f"{__name__}.build_report"


@pytest.fixture(autouse=True)
def subscribed():
    with subscribed_async(ReportRequested, [build_report]):
        yield


def test_outside_a_delivery_nothing_is_cancelled():
    assert cancel_requested() is False


def test_a_cancel_of_a_running_delivery_is_a_request_and_leaves_it_running():
    message = ReportRequested(report_id=1)
    row = recorded_delivery(message, handler=HANDLER, status=Delivery.Status.RUNNING)
    assert deliveries_cancel(deliveries=Delivery.objects.filter(pk=row.pk)) == 1
    assert deliveries_cancel(deliveries=Delivery.objects.filter(pk=row.pk)) == 1, "asking again is harmless"
    row.refresh_from_db()
    assert row.status == Delivery.Status.RUNNING
    assert DeliveryCancelRequest.objects.filter(message_id=message.message_id, handler=HANDLER).count() == 1


def test_a_handler_that_stops_on_the_request_rolls_back_and_ends_cancelled_without_a_dead_letter():
    message = ReportRequested(report_id=2)
    recorded_delivery(message, handler=HANDLER, status=Delivery.Status.PENDING)
    DeliveryCancelRequest.objects.create(message_id=message.message_id, handler=HANDLER)
    assert delivery_run(payload=message.to_json(), handler=HANDLER) == CANCELLED
    row = Delivery.objects.get(message_id=message.message_id)
    assert row.status == Delivery.Status.CANCELLED and row.completed_at is not None
    assert not Effect.objects.exists(), "its work rolled back"
    assert not DeadLetter.objects.exists()
    assert delivery_run(payload=message.to_json(), handler=HANDLER) == "duplicate", "a copy does nothing"


def test_without_a_request_the_handler_runs_to_its_end():
    message = ReportRequested(report_id=3)
    recorded_delivery(message, handler=HANDLER, status=Delivery.Status.PENDING)
    assert delivery_run(payload=message.to_json(), handler=HANDLER) == DONE
    assert Effect.objects.count() == 1
