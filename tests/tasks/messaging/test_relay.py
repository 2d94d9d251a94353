"""Contract tests of ``tasks.messaging.relay`` without a worker: the relay sends unsent rows older than the
grace period, oldest first, in batches; it survives a broker outage and stops cleanly
(DESIGN.md section 5, issue 4)."""

import io
import itertools
import signal
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from tasks.bus import MemoryBroker, override_message_broker
from tasks.messages import Message
from tasks.messaging import deliveries as dispatch
from tasks.messaging import publisher
from tasks.messaging import relay as outbox
from tasks.messaging.deliveries import DispatchError
from tasks.messaging.relay import Relay, outbox_relay_once
from tasks.models import DeadLetter, Delivery, Outbox
from tasks.reliability.sweeper import deliveries_resend_stale
from tasks.transaction import register_event, transactional
from tests.support.broker import broker_down
from tests.support.bus import remember, seen
from tests.support.connections import other_connection
from tests.support.deliveries import HANDLER, ItemStored, async_handler, delivery_row, unsent_row
from tests.support.queues import queued_messages

GRACE = timedelta(seconds=5)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def memory_broker():
    """A MemoryBroker with one sync and one async subscription, in force for the test."""
    broker = MemoryBroker()
    broker.subscribe(ItemStored, remember)
    broker.subscribe_async(ItemStored, async_handler)
    with override_message_broker(broker):
        yield broker


def sent_ids() -> set[uuid.UUID]:
    return set(Outbox.objects.filter(sent_at__isnull=False).values_list("message_id", flat=True))


def queued_message_ids(redis_client, queue: str = "default") -> list[str]:
    """Message ids of the delivery tasks in a Redis queue, in the order they were sent."""
    return [sent["args"][0]["data"]["message_id"] for sent in queued_messages(redis_client, queue)]


# --- outbox_relay_once ------------------------------------------------------------------------------


def test_relay_sends_rows_older_than_grace_oldest_first_in_batches(memory_broker, redis_client):
    # Created in one order, aged in another: the relay must follow created_at, not the pk.
    middle = unsent_row(ItemStored(item_id=1), age=timedelta(seconds=20))
    newest = unsent_row(ItemStored(item_id=2), age=timedelta(seconds=10))
    oldest = unsent_row(ItemStored(item_id=3), age=timedelta(seconds=30))

    assert outbox_relay_once(grace=GRACE, batch_size=2) == 2
    assert sent_ids() == {oldest.message_id, middle.message_id}
    assert queued_message_ids(redis_client) == [str(oldest.message_id), str(middle.message_id)]

    assert outbox_relay_once(grace=GRACE, batch_size=2) == 1
    assert sent_ids() == {oldest.message_id, middle.message_id, newest.message_id}
    assert queued_message_ids(redis_client)[-1] == str(newest.message_id)

    assert outbox_relay_once(grace=GRACE, batch_size=2) == 0
    assert redis_client.llen("default") == 3
    assert set(Outbox.objects.values_list("attempts", flat=True)) == {1}


def test_relay_sends_the_async_deliveries_of_a_row_but_never_reruns_sync_handlers(memory_broker, redis_client):
    message = ItemStored(item_id=1)
    unsent_row(message, age=timedelta(minutes=1))
    assert outbox_relay_once(grace=GRACE) == 1
    assert seen == []  # sync handlers ran in the committing process already
    delivery = Delivery.objects.get()
    assert (delivery.message_id, delivery.handler, delivery.queue) == (
        message.message_id,
        HANDLER,
        "default",
    )
    assert Message.from_json(delivery.payload) == message
    assert redis_client.llen("default") == 1


def test_relay_skips_rows_younger_than_grace(memory_broker, redis_client, settings):
    young = unsent_row(ItemStored(item_id=1), age=timedelta(0))
    old = unsent_row(ItemStored(item_id=2), age=timedelta(minutes=5))
    assert outbox_relay_once(grace=timedelta(minutes=1)) == 1
    assert sent_ids() == {old.message_id}
    young.refresh_from_db()
    assert young.sent_at is None
    assert young.attempts == 0
    settings.OUTBOX_RELAY_GRACE = 3600.0  # the setting is the default grace
    unsent_row(ItemStored(item_id=3), age=timedelta(minutes=5))
    assert outbox_relay_once() == 0
    assert redis_client.llen("default") == 1


def test_relay_never_resends_a_row_already_sent(memory_broker, redis_client):
    row = unsent_row(ItemStored(item_id=1), age=timedelta(minutes=1))
    Outbox.objects.filter(pk=row.pk).update(sent_at=timezone.now())
    assert outbox_relay_once(grace=GRACE) == 0
    assert redis_client.llen("default") == 0
    assert not Delivery.objects.exists()


def test_relay_leaves_rows_unsent_when_the_broker_is_down_and_sends_them_once_it_is_back(memory_broker, redis_client):
    first = unsent_row(ItemStored(item_id=1), age=timedelta(minutes=2))
    second = unsent_row(ItemStored(item_id=2), age=timedelta(minutes=1))
    with broker_down(), pytest.raises(DispatchError):
        outbox_relay_once(grace=GRACE)
    assert sent_ids() == set()
    assert redis_client.llen("default") == 0

    assert outbox_relay_once(grace=GRACE) == 2
    assert sent_ids() == {first.message_id, second.message_id}
    assert queued_message_ids(redis_client) == [str(first.message_id), str(second.message_id)]
    assert Delivery.objects.count() == 2


def test_relay_records_the_broker_error_but_no_attempt_of_the_row_when_the_broker_is_down(memory_broker):
    row = unsent_row(ItemStored(item_id=1), age=timedelta(minutes=1))
    with broker_down(), pytest.raises(DispatchError):
        outbox_relay_once(grace=GRACE)
    row.refresh_from_db()
    assert row.sent_at is None
    assert row.attempts == 0  # the broker's failure, not the row's: it never counts toward the row's cap
    assert "127.0.0.1" in row.last_error or row.last_error


def test_relay_dead_letters_an_unreadable_row_and_sends_the_others(memory_broker, redis_client):
    unreadable = Outbox.objects.create(
        message_id=uuid.uuid4(), message_type="no.such.Type", payload={"type": "no.such.Type", "data": {}}
    )
    Outbox.objects.filter(pk=unreadable.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    good = unsent_row(ItemStored(item_id=1), age=timedelta(minutes=1))

    assert outbox_relay_once(grace=GRACE) == 1
    unreadable.refresh_from_db()
    assert unreadable.last_error.startswith("unreadable")
    assert unreadable.attempts == 1
    dead = DeadLetter.objects.get(message_id=unreadable.message_id)
    assert dead.reason == "unreadable"
    assert dead.payload == unreadable.payload
    assert good.message_id in sent_ids()
    assert redis_client.llen("default") == 1


def test_an_unreadable_row_is_not_retried_forever(memory_broker):
    unreadable = Outbox.objects.create(
        message_id=uuid.uuid4(), message_type="no.such.Type", payload={"type": "no.such.Type", "data": {}}
    )
    Outbox.objects.filter(pk=unreadable.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    for _ in range(5):
        outbox_relay_once(grace=GRACE)
    unreadable.refresh_from_db()
    assert unreadable.attempts == 1


def test_unreadable_rows_do_not_block_newer_rows(memory_broker, redis_client):
    for _ in range(2):
        row = Outbox.objects.create(
            message_id=uuid.uuid4(), message_type="no.such.Type", payload={"type": "no.such.Type", "data": {}}
        )
        Outbox.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    good = unsent_row(ItemStored(item_id=1), age=timedelta(minutes=1))
    for _ in range(5):
        outbox_relay_once(grace=GRACE, batch_size=2)
    assert good.message_id in sent_ids()


@pytest.mark.skipif(
    not connection.features.has_select_for_update_skip_locked, reason="SKIP LOCKED is a PostgreSQL feature"
)
def test_two_relays_never_send_one_row_twice(memory_broker, redis_client, monkeypatch):
    rows = [unsent_row(ItemStored(item_id=n), age=timedelta(minutes=1)) for n in range(3)]
    inside_send, release = threading.Event(), threading.Event()
    real_record = outbox.deliveries_insert

    def held_record(rows):
        # Hold the first relay inside its claiming transaction, rows locked.
        if threading.current_thread().name == "relay-a":
            inside_send.set()
            release.wait(20)
        return real_record(rows)

    monkeypatch.setattr(outbox, "deliveries_insert", held_record)
    results = {}

    def relay_a():
        try:
            results["a"] = outbox_relay_once(grace=GRACE)
        finally:
            connection.close()

    thread = threading.Thread(target=relay_a, name="relay-a")
    thread.start()
    try:
        assert inside_send.wait(20), "the first relay never reached the send"
        results["b"] = outbox_relay_once(grace=GRACE)  # the batch is locked: skipped, not waited for
    finally:
        release.set()
        thread.join(20)
    assert not thread.is_alive()
    assert results == {"a": 3, "b": 0}
    assert sent_ids() == {r.message_id for r in rows}
    assert redis_client.llen("default") == 3


def publish_recording_committed_deliveries(monkeypatch) -> list[int]:
    """Wrap dispatch.deliveries_publish: before each real publish, count how many of its Delivery
    rows another connection (a worker) can already see."""
    real_publish = dispatch.deliveries_publish
    committed: list[int] = []

    def publish(rows):
        rows = list(rows)
        with other_connection() as other, other.cursor() as cursor:
            marks = ", ".join(["%s"] * len(rows))
            cursor.execute(
                f"SELECT COUNT(*) FROM {Delivery._meta.db_table} WHERE message_id IN ({marks})",
                [row.message_id.hex for row in rows],
            )
            committed.append(cursor.fetchone()[0])
        return real_publish(rows)

    monkeypatch.setattr(dispatch, "deliveries_publish", publish)
    monkeypatch.setattr(publisher, "deliveries_publish", publish)
    return committed


def test_commit_hook_publishes_deliveries_only_once_a_worker_can_see_them(memory_broker, redis_client, monkeypatch):

    committed = publish_recording_committed_deliveries(monkeypatch)
    transactional(register_event)(ItemStored(item_id=1))
    assert publisher.publisher_flush(5)
    assert committed == [1]
    assert redis_client.llen("default") == 1


def test_relay_publishes_deliveries_only_once_a_worker_can_see_them(memory_broker, redis_client, monkeypatch):
    unsent_row(ItemStored(item_id=1), age=timedelta(minutes=1))
    committed = publish_recording_committed_deliveries(monkeypatch)
    assert outbox_relay_once(grace=GRACE) == 1
    assert committed == [1]


def test_relay_pass_resends_deliveries_sent_long_ago_and_never_finished(null_broker, redis_client, settings):
    # The wiring: a pass ends with the sweeper it was given (what it re-sends: test_sweeper.py).
    stale_after = timedelta(seconds=settings.DELIVERY_RESEND_AFTER)
    stale = delivery_row(status=Delivery.Status.PENDING, sent_ago=stale_after * 2)

    assert Relay(resend=deliveries_resend_stale).run_once() == 1
    assert queued_message_ids(redis_client, "low") == [str(stale.message_id)]
    assert Relay(resend=deliveries_resend_stale).run_once() == 0  # not again until it is stale again


def test_relay_pass_resends_after_draining_the_outbox_and_counts_both_when_both_send(null_broker):
    for n in range(3):
        unsent_row(ItemStored(item_id=n), age=timedelta(minutes=1))
    unsent_when_resend_ran = []

    def resend() -> int:
        unsent_when_resend_ran.append(Outbox.objects.filter(sent_at__isnull=True).count())
        return 2

    assert Relay(resend=resend).run_once() == 3 + 2
    assert unsent_when_resend_ran == [0]


def test_relay_outbox_command_resends_stale_deliveries_when_run_once(null_broker, redis_client, settings):
    stale = delivery_row(
        status=Delivery.Status.RUNNING, sent_ago=timedelta(seconds=settings.DELIVERY_RESEND_AFTER + 60)
    )
    out = io.StringIO()
    call_command("relay_outbox", "--once", stdout=out)
    assert out.getvalue().strip() == "sent 1"
    assert queued_message_ids(redis_client, "low") == [str(stale.message_id)]


# --- relay_outbox command -----------------------------------------------------------------------------


def test_relay_outbox_once_prints_how_many_it_sent(null_broker):
    for n in range(2):
        unsent_row(ItemStored(item_id=n), age=timedelta(minutes=10))
    unsent_row(ItemStored(item_id=9), age=timedelta(0))
    out = io.StringIO()
    call_command("relay_outbox", "--once", stdout=out)
    assert out.getvalue().strip() == "sent 2"
    assert len(sent_ids()) == 2
    out = io.StringIO()
    call_command("relay_outbox", "--once", stdout=out)
    assert out.getvalue().strip() == "sent 0"


def test_relay_outbox_once_fails_clearly_when_the_broker_is_down(memory_broker):
    unsent_row(ItemStored(item_id=1), age=timedelta(minutes=10))
    with broker_down(), pytest.raises(CommandError, match="broker unavailable"):
        call_command("relay_outbox", "--once", stdout=io.StringIO())
    assert sent_ids() == set()


# --- the Relay loop -------------------------------------------------------------------------------------


def test_relay_stops_cleanly_when_stop_is_called_from_another_thread(null_broker, caplog):
    row = unsent_row(ItemStored(item_id=1), age=timedelta(minutes=10))
    relay = Relay(resend=deliveries_resend_stale, interval=0.01)
    errors = []

    def run():
        try:
            relay.run_forever()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="relay")
    thread.start()
    try:
        for _ in range(1000):  # until the relay has done real work, at most ~10 s
            if Outbox.objects.filter(pk=row.pk, sent_at__isnull=False).exists():
                break
            time.sleep(0.01)
        assert Outbox.objects.filter(pk=row.pk, sent_at__isnull=False).exists()
        assert thread.is_alive()
    finally:
        relay.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert errors == []
    assert any(r.getMessage() == "outbox relay stopped" for r in caplog.records)


def test_relay_installs_sigterm_and_sigint_handlers_that_stop_it():
    relay = Relay(resend=deliveries_resend_stale, interval=0.01)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        relay.install_signal_handlers()
        handler = signal.getsignal(signal.SIGTERM)
        assert handler == relay.stop
        assert signal.getsignal(signal.SIGINT) == relay.stop
        handler(signal.SIGTERM, None)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    relay.run_forever()  # returns at once: it was told to stop


class FakeTime(threading.Event):
    """The relay's clock and stop event: a wait advances the clock instead of sleeping; set after
    ``limit`` waits."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.now = 0.0
        self.waits = 0

    def clock(self) -> float:
        return self.now

    def wait(self, timeout=None):
        self.now += timeout or 0.0
        self.waits += 1
        if self.waits >= self.limit:
            self.set()
        return self.is_set()


def timed(fake: FakeTime, calls: list[float], run):
    def pass_():
        calls.append(fake.now)
        return run()

    return pass_


def test_relay_backs_off_exponentially_while_the_broker_is_down_and_resets_after(memory_broker, redis_client):
    unsent_row(ItemStored(item_id=1), age=timedelta(minutes=10))
    fake = FakeTime(limit=800)  # the resend pass runs every 0.25 s meanwhile
    relay = Relay(resend=lambda: 0, interval=0.25, clock=fake.clock)
    relay._stop = fake
    outbox_calls: list[float] = []
    relay.passes[0].run = timed(fake, outbox_calls, relay.drain_outbox)
    with broker_down():
        relay.run_forever()
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(outbox_calls)]
    assert gaps[:7] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert sent_ids() == set()

    fake.clear()
    fake.limit, fake.waits = 200, 0  # 30 s at most until the backed-off pass is due, then 0.25 s apart
    outbox_calls.clear()
    relay.run_forever()
    assert len(sent_ids()) == 1
    assert redis_client.llen("default") == 1
    after = [round(b - a, 2) for a, b in itertools.pairwise(outbox_calls[1:])]
    assert after and set(after) == {0.25}
