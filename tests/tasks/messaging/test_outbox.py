"""Contract tests of ``tasks.transaction``: ``transactional`` and ``register_event`` with the
outbox: published after commit only, never on rollback (savepoints included), and a broker
outage at commit that neither blocks nor raises (DESIGN.md section 4-5, issue 4)."""

import contextlib
import signal
import uuid
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tasks.bus import MemoryBroker, NullBroker, TestBroker, override_message_broker
from tasks.messages import Message
from tasks.messaging.outbox import outbox_publish_after_commit
from tasks.messaging.publisher import outbox_mark_sent, publisher_flush
from tasks.models import Delivery, Outbox
from tasks.transaction import register_event, transactional
from tests.support.broker import broker_down
from tests.support.bus import remember, seen
from tests.support.connections import other_connection

MODULE = __name__


@dataclass(frozen=True)
class GroupCreated(Message):
    group_id: int
    label: str = ""


def async_noop(message):
    """An async handler; it never runs here (no worker), only its delivery is sent."""


def register_follow_up(message):
    """A sync handler that registers a further event, as a domain handler may."""
    if message.label != "follow-up":
        register_event(GroupCreated(group_id=message.group_id, label="follow-up"))


def sync_failing(message):
    raise RuntimeError("sync handler exploded")


class Hung(BaseException):
    """Not an Exception, so no ``except Exception`` on the way can swallow it."""


@contextlib.contextmanager
def must_not_hang(seconds: int = 20):
    """Guard against a commit hook that blocks (retries) while the broker is down."""

    def on_alarm(signum, frame):
        raise Hung(f"still blocked after {seconds}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def committed_outbox_rows(other, message_id: uuid.UUID) -> int:
    with other.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {Outbox._meta.db_table} WHERE message_id = %s", [message_id.hex])
        return cursor.fetchone()[0]


# --- register_event inside a transaction ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_register_event_writes_the_outbox_row_in_the_transaction_and_publishes_after_commit(null_broker):
    inside = {}

    @transactional
    def create_group(name):
        group = Group.objects.create(name=name)
        message = GroupCreated(group_id=group.pk)
        register_event(message)
        row = Outbox.objects.get(message_id=message.message_id)
        inside.update(message=message, row=row, published=list(null_broker.published))
        return group

    group = create_group("g")
    message, row = inside["message"], inside["row"]
    assert inside["published"] == []  # nothing before commit
    assert row.message_type == GroupCreated.message_name
    assert row.payload == message.to_json()
    assert row.sent_at is None

    assert null_broker.published == [message]
    assert message.group_id == group.pk
    row.refresh_from_db()
    assert row.sent_at is not None


@pytest.mark.django_db(transaction=True)
def test_the_outbox_row_commits_with_the_business_row_and_not_before(null_broker):
    message = GroupCreated(group_id=0)
    with other_connection() as other:
        with transaction.atomic():
            Group.objects.create(name="g")
            register_event(message)
            assert committed_outbox_rows(other, message.message_id) == 0
            assert null_broker.published == []
        assert committed_outbox_rows(other, message.message_id) == 1
    assert null_broker.published == [message]


@pytest.mark.django_db
def test_nothing_is_published_until_the_commit_callbacks_run(null_broker, django_capture_on_commit_callbacks):
    message = GroupCreated(group_id=1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        transactional(register_event)(message)
    assert null_broker.published == []
    assert Outbox.objects.get(message_id=message.message_id).sent_at is None
    assert len(callbacks) == 1
    callbacks[0]()
    assert null_broker.published == [message]
    assert Outbox.objects.get(message_id=message.message_id).sent_at is not None


@pytest.mark.django_db(transaction=True)
def test_publish_waits_for_the_outermost_commit_not_a_released_savepoint(null_broker):
    message = GroupCreated(group_id=1)
    with transaction.atomic():
        with transaction.atomic():
            register_event(message)
        assert null_broker.published == []
        transactional(lambda: None)()
        assert null_broker.published == []
    assert null_broker.published == [message]


@pytest.mark.django_db(transaction=True)
def test_events_of_one_transaction_are_published_in_order(null_broker):
    messages = [GroupCreated(group_id=n) for n in range(3)]

    @transactional
    def register_all():
        for message in messages:
            register_event(message)

    register_all()
    assert null_broker.published == messages
    assert Outbox.objects.filter(sent_at__isnull=False).count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_publishes_nothing_and_leaves_no_row(null_broker):
    message = GroupCreated(group_id=1)

    @transactional
    def create_then_fail():
        Group.objects.create(name="g")
        register_event(message)
        raise ValueError("business rule broken")

    with pytest.raises(ValueError, match="business rule broken"):
        create_then_fail()
    assert null_broker.published == []
    assert not Outbox.objects.exists()
    assert not Group.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_savepoint_publishes_nothing_from_inside_it(null_broker):
    before, inside, after = GroupCreated(group_id=1), GroupCreated(group_id=2), GroupCreated(group_id=3)

    @transactional
    def inner_fails():
        Group.objects.create(name="inner")
        register_event(inside)
        raise ValueError("inner step failed")

    @transactional
    def outer():
        Group.objects.create(name="outer")
        register_event(before)
        with contextlib.suppress(ValueError):
            inner_fails()
        with contextlib.suppress(KeyError), transaction.atomic():
            register_event(GroupCreated(group_id=99))
            raise KeyError("plain savepoint rolled back")
        register_event(after)

    outer()
    assert null_broker.published == [before, after]
    assert set(Outbox.objects.values_list("message_id", flat=True)) == {before.message_id, after.message_id}
    assert list(Group.objects.values_list("name", flat=True)) == ["outer"]
    assert not Outbox.objects.filter(sent_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_register_event_commits_and_publishes_at_once(null_broker):
    assert not connection.in_atomic_block
    message = GroupCreated(group_id=1)
    register_event(message)
    assert null_broker.published == [message]
    row = Outbox.objects.get(message_id=message.message_id)
    assert row.sent_at is not None
    with other_connection() as other:
        assert committed_outbox_rows(other, message.message_id) == 1


@pytest.mark.django_db(transaction=True)
def test_after_commit_sync_handlers_run_with_the_committed_message():
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe(GroupCreated, remember)
    message = GroupCreated(group_id=1)
    with override_message_broker(broker):

        @transactional
        def create():
            register_event(message)
            assert seen == []

        create()
    assert seen == [message]


@pytest.mark.django_db(transaction=True)
def test_an_event_registered_by_a_sync_handler_after_commit_is_published_too():
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe(GroupCreated, register_follow_up)
    broker.subscribe(GroupCreated, remember)
    first = GroupCreated(group_id=1, label="first")
    with override_message_broker(broker):
        transactional(register_event)(first)
    # Outside a transaction the follow-up publishes at once, nested inside the first publish.
    assert sorted(m.label for m in seen) == ["first", "follow-up"]
    assert Outbox.objects.count() == 2
    assert not Outbox.objects.filter(sent_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_failing_sync_handler_after_commit_does_not_reach_the_caller():
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe(GroupCreated, sync_failing)
    broker.subscribe(GroupCreated, remember)
    message = GroupCreated(group_id=1)
    with override_message_broker(broker):
        transactional(register_event)(message)
    assert seen == [message]
    assert Outbox.objects.get(message_id=message.message_id).sent_at is not None


@pytest.mark.django_db(transaction=True)
def test_after_commit_async_deliveries_reach_the_queue_and_the_row_is_marked_sent(redis_client):
    broker = MemoryBroker()
    broker.subscribe(GroupCreated, remember)
    broker.subscribe_async(GroupCreated, async_noop)
    message = GroupCreated(group_id=1)
    with override_message_broker(broker):
        transactional(register_event)(message)
    assert seen == [message]
    assert publisher_flush(5)
    assert redis_client.llen("default") == 1
    delivery = Delivery.objects.get()
    assert (delivery.message_id, delivery.handler) == (message.message_id, f"{MODULE}.async_noop")
    assert Outbox.objects.get(message_id=message.message_id).sent_at is not None


@pytest.mark.parametrize("not_a_message", [None, {"type": "x", "data": {}}, "event", GroupCreated])
@pytest.mark.django_db
def test_register_event_refuses_anything_but_a_message_instance(not_a_message, null_broker):
    with pytest.raises(TypeError):
        register_event(not_a_message)
    assert not Outbox.objects.exists()
    assert null_broker.published == []


# --- broker down at commit -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_broker_down_at_commit_returns_without_error_and_leaves_the_row_unsent(redis_client):
    broker = MemoryBroker()
    broker.subscribe(GroupCreated, remember)
    broker.subscribe_async(GroupCreated, async_noop)

    @transactional
    def create_group(name):
        group = Group.objects.create(name=name)
        register_event(GroupCreated(group_id=group.pk, label=name))
        return group

    with override_message_broker(broker), broker_down(), must_not_hang():
        group = create_group("while-down")

    assert Group.objects.filter(pk=group.pk, name="while-down").exists()
    row = Outbox.objects.get()
    assert row.sent_at is None
    assert row.payload["data"]["group_id"] == group.pk
    assert [m.label for m in seen] == ["while-down"]  # sync handlers ran in the committing process
    assert redis_client.llen("default") == 0
    delivery = Delivery.objects.get()  # recorded before the send failed, for the sweeper
    assert delivery.status == Delivery.Status.PENDING
    assert delivery.handler == f"{MODULE}.async_noop"


@pytest.mark.django_db(transaction=True)
def test_publish_after_commit_never_raises_even_when_the_broker_fails_unexpectedly():
    class Exploding(NullBroker):
        def publish(self, message):
            raise ConnectionError("not a DispatchError")

    message = GroupCreated(group_id=1)
    broker = Exploding()
    with override_message_broker(broker):
        transactional(register_event)(message)
        assert Outbox.objects.get(message_id=message.message_id).sent_at is None
        outbox_publish_after_commit(Outbox.objects.get().pk, message, [], broker)  # called directly: still no exception
    assert Outbox.objects.get().sent_at is None


# --- transactional ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_transactional_keeps_the_return_value_name_and_docstring():
    @transactional
    def component_upload(*, name: str) -> str:
        """Upload a component."""
        assert connection.in_atomic_block
        Group.objects.create(name=name)
        return f"uploaded {name}"

    assert component_upload.__name__ == "component_upload"
    assert component_upload.__doc__ == "Upload a component."
    assert component_upload.__wrapped__ is not None
    assert component_upload(name="x") == "uploaded x"
    assert not connection.in_atomic_block
    assert Group.objects.filter(name="x").exists()


@pytest.mark.django_db(transaction=True)
def test_transactional_rolls_back_and_re_raises_when_the_function_raises():
    @transactional
    def create_and_fail():
        Group.objects.create(name="doomed")
        raise LookupError("no")

    with pytest.raises(LookupError):
        create_and_fail()
    assert not Group.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_transactional_inside_a_transaction_is_a_savepoint():
    @transactional
    def inner():
        Group.objects.create(name="inner")
        raise LookupError

    with transaction.atomic():
        Group.objects.create(name="outer")
        with pytest.raises(LookupError):
            inner()
    assert list(Group.objects.values_list("name", flat=True)) == ["outer"]


@pytest.mark.django_db(transaction=True)
def test_marking_no_rows_sent_sends_no_query():
    with CaptureQueriesContext(connection) as queries:
        outbox_mark_sent(outbox_ids=[])
    assert len(queries) == 0
