"""The dead-letter admin's requeue paths (``tasks.reliability.admin``): the list action and the
change page's button lock and re-check each dead letter, and resolve one whose delivery is done
(issue 14 item 1)."""

from dataclasses import dataclass

import pytest
from django.urls import reverse

from tasks.messages import Message
from tasks.models import DeadLetter, Delivery
from tasks.reliability.dead_letters import FailedDelivery, dead_letter_record
from tests.support.deliveries import recorded_delivery
from tests.support.queues import queued_messages
from tests.support.subscribed import subscribed_async

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class InvoiceDue(Message):
    invoice_id: int


def send_reminder(message: InvoiceDue) -> None:
    """Subscribed for the test; never run here (nothing consumes the queue)."""


HANDLER = f"{__name__}.send_reminder"


@pytest.fixture(autouse=True)
def subscribed():
    with subscribed_async(InvoiceDue, [send_reminder]):
        yield


def dead_letter(*, delivery_status: str) -> DeadLetter:
    message = InvoiceDue(invoice_id=1)
    recorded_delivery(message, handler=HANDLER, status=delivery_status)
    return dead_letter_record(
        task_name="tasks.deliver",
        task_id="t-1",
        queue="default",
        args=[message.to_json(), HANDLER],
        kwargs={},
        exc=RuntimeError("stale copy failed"),
        traceback="",
        attempts=1,
        reason="failed",
        delivery=FailedDelivery(
            message_id=str(message.message_id), handler=HANDLER, message_type=message.message_name,
            payload=message.to_json(),
        ),
    )  # fmt: skip


def test_the_list_action_resolves_a_dead_letter_whose_delivery_is_done_and_sends_nothing(
    admin_client_logged_in, redis_client
):
    dead = dead_letter(delivery_status=Delivery.Status.DONE)
    response = admin_client_logged_in.post(
        reverse("admin:tasks_deadletter_changelist"),
        {"action": "requeue_dead_letters", "_selected_action": [dead.pk]},
        follow=True,
    )
    assert "Requeued 0 dead letter(s). 1 resolved" in response.content.decode()
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.RESOLVED
    assert queued_messages(redis_client, "default") == []
    assert Delivery.objects.get().status == Delivery.Status.DONE


def test_the_requeue_button_of_a_page_loaded_before_another_requeue_sends_nothing_more(
    admin_client_logged_in, redis_client
):
    dead = dead_letter(delivery_status=Delivery.Status.RUNNING)
    assert Delivery.objects.get().status == Delivery.Status.DEAD
    url = reverse("admin:tasks_deadletter_change", args=[dead.pk])
    first = admin_client_logged_in.post(url, {"_requeue": "1"}, follow=True)
    assert f"Requeued dead letter {dead.pk}." in first.content.decode()
    second = admin_client_logged_in.post(url, {"_requeue": "1"}, follow=True)  # the same page, again
    assert f"Dead letter {dead.pk} is requeued: not requeued." in second.content.decode()
    assert len(queued_messages(redis_client, "default")) == 1


def test_the_deliveries_cancel_action_cancels_what_has_not_started_and_says_what_it_left(admin_client_logged_in):
    rows = {
        status: recorded_delivery(InvoiceDue(invoice_id=n), handler=HANDLER, status=status)
        for n, status in enumerate((Delivery.Status.DELAYED, Delivery.Status.PENDING, Delivery.Status.DONE))
    }
    response = admin_client_logged_in.post(
        reverse("admin:tasks_delivery_changelist"),
        {"action": "cancel_deliveries", "_selected_action": [row.pk for row in rows.values()]},
        follow=True,
    )
    assert "Cancelled 2 delivery(ies). 1 left as they were" in response.content.decode()
    statuses = {status: Delivery.objects.get(pk=row.pk).status for status, row in rows.items()}
    assert statuses == {
        Delivery.Status.DELAYED: Delivery.Status.CANCELLED,
        Delivery.Status.PENDING: Delivery.Status.CANCELLED,
        Delivery.Status.DONE: Delivery.Status.DONE,
    }
