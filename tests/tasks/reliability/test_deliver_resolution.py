"""How ``tasks.deliver`` finds the handler it runs: only in the subscription registry, never by
importing a path the broker sent (issue 16 item 5), a renamed handler by the paths it
``replaces``, and an unknown type or handler retried for the deploy window before it becomes a
dead letter (issue 14 item 3)."""

import builtins
import os
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.messages import Message
from tasks.models import DeadLetter, Delivery
from tasks.reliability.deliver import (
    DONE,
    RefusedDelivery,
    UnknownToThisWorker,
    deliver,
    delivery_run,
    deploy_window_wait,
)
from tests.support.deliveries import recorded_delivery
from tests.support.subscribed import subscribed_async

MODULE = __name__

pytestmark = pytest.mark.django_db(transaction=True)

calls: list[tuple[str, object]] = []


@dataclass(frozen=True)
class OrderPlaced(Message):
    order_id: int


@dataclass(frozen=True)
class OrderCancelled(Message):
    order_id: int


def ship_order(message: OrderPlaced) -> None:
    calls.append(("ship_order", message.order_id))


def refund_order(message: OrderCancelled) -> None:
    """A real handler, subscribed async, but for OrderCancelled only."""
    calls.append(("refund_order", message.order_id))


def sync_only(message: OrderPlaced) -> None:
    calls.append(("sync_only", message.order_id))


@pytest.fixture(autouse=True)
def subscriptions():
    calls.clear()
    with (
        subscribed_async(OrderPlaced, [ship_order], replaces=[f"{MODULE}.old_ship_order", "legacy.shipping.ship"]),
        subscribed_async(OrderCancelled, [refund_order]),
    ):
        from tasks.bus import get_message_broker  # noqa: PLC0415

        get_message_broker().subscribe(OrderPlaced, sync_only)
        yield
    calls.clear()


def recorded(message: Message, handler: str, *, age: timedelta = timedelta(0)) -> Delivery:
    delivery = recorded_delivery(message, handler=handler)
    Delivery.objects.filter(pk=delivery.pk).update(created_at=timezone.now() - age)
    return delivery


@pytest.mark.parametrize(
    "handler",
    [
        "builtins.print",
        "sys.exit",
        "os.system",
        f"{MODULE}.refund_order",  # subscribed async, but not for OrderPlaced
        f"{MODULE}.sync_only",  # subscribed for OrderPlaced, but sync
    ],
)
def test_a_forged_delivery_is_refused_dead_lettered_and_never_run_when_it_names_an_unsubscribed_handler(
    handler, monkeypatch
):
    ran: list[object] = []

    def spy(name, real):
        # Called with the message, it was run as a handler; other callers (logging) pass through.
        def call(*args, **kwargs):
            if any(isinstance(arg, Message) for arg in args):
                ran.append(name)
                return None
            return real(*args, **kwargs)

        return call

    for module, name in ((builtins, "print"), (sys, "exit"), (os, "system")):
        monkeypatch.setattr(module, name, spy(name, getattr(module, name)))
    payload = OrderPlaced(order_id=1).to_json()

    result = deliver.apply(args=(payload, handler))

    assert result.failed()
    assert isinstance(result.result, RefusedDelivery)
    assert ran == [] and calls == []
    dead = DeadLetter.objects.get()
    assert (dead.reason, dead.handler) == ("refused", handler)
    assert not Delivery.objects.exists()


def test_a_forged_delivery_is_refused_when_its_arguments_are_not_a_delivery():
    result = deliver.apply(args=({"type": 42, "data": []}, "builtins.print"))
    assert isinstance(result.result, RefusedDelivery)
    assert DeadLetter.objects.get().reason == "refused"


def test_a_subscribed_handler_runs_when_its_delivery_names_it_by_its_path():
    message = OrderPlaced(order_id=2)
    assert delivery_run(payload=message.to_json(), handler=f"{MODULE}.ship_order") == DONE
    assert calls == [("ship_order", 2)]


@pytest.mark.parametrize("old_path", [f"{MODULE}.old_ship_order", "legacy.shipping.ship"])
def test_a_delivery_recorded_under_an_old_handler_path_runs_the_handler_that_replaces_it(old_path):
    message = OrderPlaced(order_id=3)
    recorded(message, old_path)
    assert delivery_run(payload=message.to_json(), handler=old_path) == DONE
    assert delivery_run(payload=message.to_json(), handler=old_path) != DONE  # once, under its own key
    assert calls == [("ship_order", 3)]
    assert Delivery.objects.get(handler=old_path).status == Delivery.Status.DONE


def test_an_unknown_handler_waits_for_the_deploy_window_when_a_process_recorded_its_delivery(settings):
    settings.DELIVERY_DEPLOY_WINDOW, settings.TASKS_RETRY_BACKOFF_MAX = 900, 30
    message = OrderPlaced(order_id=4)
    recorded(message, "marketplace.handlers.new_handler", age=timedelta(seconds=8))
    with pytest.raises(UnknownToThisWorker) as raised:
        delivery_run(payload=message.to_json(), handler="marketplace.handlers.new_handler")
    assert raised.value.dead_letter_reason == "unknown handler"

    countdown = deploy_window_wait(
        payload=message.to_json(), handler="marketplace.handlers.new_handler", exc=raised.value
    )

    assert 4 <= countdown <= 8  # grows with the time waited so far, jittered
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.PENDING
    assert delivery.sent_at > timezone.now()  # the sweeper leaves it to this retry
    assert delivery.unfinished_starts == 0  # not a start: the handler never began


def test_an_unknown_type_is_dead_lettered_with_its_reason_when_the_deploy_window_has_passed(settings):
    settings.DELIVERY_DEPLOY_WINDOW = 900
    message_id = uuid.uuid4()
    payload = {"type": "marketplace.events.NotDeployedYet", "data": {"message_id": str(message_id)}}
    Delivery.objects.create(
        message_id=message_id, handler="marketplace.handlers.x", message_type="m.N", payload=payload, queue="default"
    )
    Delivery.objects.update(created_at=timezone.now() - timedelta(seconds=901))

    result = deliver.apply(args=(payload, "marketplace.handlers.x"))

    assert result.failed()
    dead = DeadLetter.objects.get()
    assert (dead.reason, dead.message_id) == ("unknown type", message_id)
    assert "unknown message type" in dead.exception_message
    assert Delivery.objects.get().status == Delivery.Status.DEAD


def test_a_payload_with_a_field_this_code_does_not_know_is_unknown_to_this_worker_not_dropped():
    payload = OrderPlaced(order_id=5).to_json()
    payload["data"]["coupon"] = "SPRING"  # written by a newer release
    with pytest.raises(UnknownToThisWorker, match="coupon") as raised:
        delivery_run(payload=payload, handler=f"{MODULE}.ship_order")
    assert raised.value.dead_letter_reason == "unknown type"
    assert calls == []
