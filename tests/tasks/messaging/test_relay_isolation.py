"""One bad row never blocks the relay (issue 14 item 8): rows fail alone, with their error recorded
and after a cap a dead letter; a broker outage is told apart from a bad row; the relay's passes
fail and back off independently."""

import io
import itertools
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tasks.bus import MemoryBroker, override_message_broker
from tasks.messaging import relay as relay_module
from tasks.messaging.relay import Relay, outbox_relay_once
from tasks.messaging.subscriptions import Subscription
from tasks.models import DeadLetter, Delivery, Outbox
from tasks.transaction import register_event
from tests.support.broker import broker_down
from tests.support.deliveries import HANDLER, ItemStored, async_handler, unsent_row
from tests.support.queues import queued_messages

MODULE = __name__
GRACE = timedelta(seconds=5)

pytestmark = pytest.mark.django_db(transaction=True)


def retired_handler(message):
    """Subscribed on a queue the workers no longer have (the broker refuses its deliveries)."""


@pytest.fixture
def memory_broker():
    broker = MemoryBroker()
    broker.subscribe_async(ItemStored, async_handler)
    with override_message_broker(broker):
        yield broker


def failing_plan_for(broker: MemoryBroker, monkeypatch, bad_item: int) -> None:
    """Planning raises for one message (a bug, data the code cannot plan), as nothing else does."""
    real = broker.async_plan

    def plan(message):
        if message.item_id == bad_item:
            raise RuntimeError(f"cannot plan item {bad_item}")
        return real(message)

    monkeypatch.setattr(broker, "async_plan", plan)


def test_a_row_that_cannot_be_planned_fails_alone_with_its_error_and_the_others_are_sent(
    memory_broker, redis_client, monkeypatch
):
    bad = unsent_row(ItemStored(item_id=1), age=timedelta(minutes=2))
    good = unsent_row(ItemStored(item_id=2))
    failing_plan_for(memory_broker, monkeypatch, bad_item=1)

    assert outbox_relay_once(grace=GRACE) == 1

    bad.refresh_from_db()
    good.refresh_from_db()
    assert (bad.sent_at, bad.attempts) == (None, 1)
    assert "cannot plan item 1" in bad.last_error
    assert good.sent_at is not None
    assert [m["args"][0]["data"]["item_id"] for m in queued_messages(redis_client, "default")] == [2]


def test_a_row_that_keeps_failing_becomes_a_dead_letter_after_the_cap_and_leaves_the_queue(
    memory_broker, redis_client, monkeypatch, settings
):
    settings.RELAY_ROW_MAX_FAILURES = 3
    bad = unsent_row(ItemStored(item_id=1))
    failing_plan_for(memory_broker, monkeypatch, bad_item=1)
    for _ in range(2):
        outbox_relay_once(grace=GRACE)
    assert not DeadLetter.objects.exists()

    outbox_relay_once(grace=GRACE)
    dead = DeadLetter.objects.get(message_id=bad.message_id)
    assert (dead.reason, dead.task_name) == ("relay failed", relay_module.OUTBOX_DEAD_LETTER_TASK)
    assert "cannot plan item 1" in dead.exception_message
    bad.refresh_from_db()
    assert bad.sent_at is not None  # out of the queue: the relay stops trying it
    outbox_relay_once(grace=GRACE)
    assert DeadLetter.objects.count() == 1


def test_a_delivery_the_broker_refuses_for_itself_fails_alone_and_is_not_called_a_broker_outage(
    memory_broker, redis_client
):
    # A queue that was removed from the configuration: Celery refuses to route to it.
    memory_broker._subscriptions.append(Subscription(ItemStored, retired_handler, is_async=True, queue_name="retired"))
    row = unsent_row(ItemStored(item_id=1))

    assert outbox_relay_once(grace=GRACE) == 1  # no DispatchError: the broker is up

    row.refresh_from_db()
    assert row.sent_at is not None  # its deliveries are recorded: the sweeper owns the refused one
    refused = Delivery.objects.get(handler=f"{MODULE}.retired_handler")
    assert refused.status == Delivery.Status.PENDING
    assert "retired" in refused.last_error
    assert Delivery.objects.get(handler=HANDLER).last_error == ""
    assert redis_client.llen("default") == 1


def test_the_resend_pass_runs_when_the_outbox_pass_fails(memory_broker, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("outbox pass bug")

    monkeypatch.setattr(relay_module, "outbox_relay_once", broken)
    resends = []
    relay = Relay(resend=lambda: resends.append(1) or 1, interval=0.01)
    with pytest.raises(RuntimeError, match="outbox pass bug"):
        relay.run_once()
    assert resends == [1]


def test_the_relay_loop_keeps_running_the_other_passes_while_one_keeps_failing(memory_broker, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("outbox pass bug")

    monkeypatch.setattr(relay_module, "outbox_relay_once", broken)
    now = [0.0]
    resends, replans = [], []

    class Stop:
        waits = 0

        def is_set(self):
            return self.waits >= 100

        def wait(self, timeout):
            now[0] += timeout
            self.waits += 1

    relay = Relay(
        resend=lambda: resends.append(now[0]) or 0,
        replan=lambda: replans.append(now[0]) or 0,
        interval=0.5,
        clock=lambda: now[0],
    )
    relay._stop = Stop()
    relay.run_forever()
    assert len(resends) > 20
    assert len(replans) > 20
    assert max(b - a for a, b in itertools.pairwise(resends)) == pytest.approx(0.5)


def test_relay_outbox_once_still_reports_a_broker_outage_after_running_every_pass(memory_broker):
    unsent_row(ItemStored(item_id=1))
    with broker_down(), pytest.raises(CommandError, match="broker unavailable"):
        call_command("relay_outbox", "--once", stdout=io.StringIO())
    assert Outbox.objects.get().attempts == 0


def test_the_relay_sends_a_delivery_under_the_task_id_its_commit_recorded_when_the_commit_could_not_send(
    memory_broker, redis_client
):
    # Otherwise the sweeper, looking for the recorded id, would find it absent and send a copy.
    with broker_down():
        register_event(ItemStored(item_id=1))
    Outbox.objects.update(created_at=timezone.now() - timedelta(minutes=1))
    assert outbox_relay_once(grace=GRACE) == 1
    assert [m["id"] for m in queued_messages(redis_client, "default")] == [Delivery.objects.get().task_id]
