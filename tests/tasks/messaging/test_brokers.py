"""Contract tests of the brokers: Memory, Null and Test brokers, ``get_message_broker`` and
``override_message_broker`` (DESIGN.md section 4)."""

import pytest

from tasks.bus import (
    Broker,
    MemoryBroker,
    NullBroker,
    TestBroker,
    get_message_broker,
    override_message_broker,
)
from tasks.messages import Message
from tasks.messaging.deliveries import DispatchError
from tasks.models import Delivery
from tasks.queues import LOW_PRIORITY
from tests.support.broker import broker_down
from tests.support.bus import (
    MODULE,
    FollowUp,
    LoudPing,
    Ping,
    Unrelated,
    async_failing,
    async_on_follow_up,
    async_publish_follow_up,
    async_record,
    async_record_too,
    calls,
    even,
    names,
    never,
    record_other,
    record_sync,
)
from tests.support.queues import queued_messages

# --- NullBroker ------------------------------------------------------------------------------------


def test_null_broker_records_what_is_published_and_runs_nothing():
    null = NullBroker()
    null.subscribe(Ping, record_sync)
    null.subscribe_async(Ping, async_record)
    first, second, third = Ping(number=1), Ping(number=2), Unrelated(text="x")
    null.publish(first)
    null.publish_many([second, third])
    assert null.published == [first, second, third]
    assert calls == []


@pytest.mark.django_db
def test_null_broker_sends_no_delivery(redis_client):
    null = NullBroker()
    null.subscribe_async(Ping, async_record)
    null.publish(Ping(number=1))
    assert Delivery.objects.count() == 0
    assert redis_client.llen("default") == 0


# --- TestBroker --------------------------------------------------------------------------------------


def test_test_broker_runs_sync_handlers_at_publish_and_async_ones_on_process_messages():
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe(Ping, record_sync)
    broker.subscribe_async(Ping, async_record)
    broker.subscribe_async(Ping, async_record_too, queue_name=LOW_PRIORITY)
    message = Ping(number=1)
    broker.publish(message)
    assert calls == [("record_sync", message)]
    assert broker.published == [message]
    assert broker.process_messages() == 2
    assert calls == [("record_sync", message), ("async_record", message), ("async_record_too", message)]
    assert broker.process_messages() == 0
    assert len(calls) == 3


def test_test_broker_sends_no_async_delivery_when_the_predicate_is_false():
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe_async(Ping, async_record, predicate=even)
    broker.subscribe_async(Ping, async_record_too, predicate=never)
    broker.publish(Ping(number=1))
    assert broker.pending == []
    assert broker.process_messages() == 0
    broker.publish(Ping(number=2))
    assert broker.process_messages() == 1
    assert names() == ["async_record"]


def test_process_messages_also_runs_deliveries_published_by_handlers():
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe_async(Ping, async_publish_follow_up)
    broker.subscribe_async(FollowUp, async_on_follow_up)
    message = Ping(number=1)
    with override_message_broker(broker):
        broker.publish(message)
        assert broker.process_messages() == 2
    assert names() == ["async_publish_follow_up", "async_on_follow_up"]
    follow_up = calls[1][1]
    assert isinstance(follow_up, FollowUp)
    assert follow_up.origin == message.message_id
    assert broker.published == [message, follow_up]


def test_process_messages_lets_a_handler_error_propagate():
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe_async(Ping, async_failing)
    broker.publish(Ping(number=1))
    with pytest.raises(RuntimeError, match="async handler exploded"):
        broker.process_messages()


def test_test_broker_publish_many_publishes_each_message():
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe(Ping, record_sync)
    broker.subscribe_async(Ping, async_record)
    messages = [Ping(number=1), Ping(number=2)]
    broker.publish_many(messages)
    assert broker.published == messages
    assert names() == ["record_sync", "record_sync"]
    assert broker.process_messages() == 2


def test_test_broker_copies_the_default_broker_subscriptions(default_broker):
    default_broker.subscribe(Ping, record_sync)
    default_broker.subscribe_async(Ping, async_record)
    broker = TestBroker()
    copied = [(s.message_type, s.handler, s.is_async) for s in broker.subscriptions()]
    assert (Ping, record_sync, False) in copied
    assert (Ping, async_record, True) in copied
    broker.subscribe(Ping, record_other)  # a copy: the default broker is not changed
    assert record_other not in [s.handler for s in default_broker.subscriptions()]
    broker.publish(Ping(number=1))
    broker.process_messages()
    assert names() == ["record_sync", "record_other", "async_record"]


def test_test_broker_starts_empty_without_copy_subscriptions(default_broker):
    default_broker.subscribe(Ping, record_sync)
    broker = TestBroker(copy_subscriptions=False)
    assert broker.subscriptions() == []
    broker.publish(Ping(number=1))
    assert calls == []


# --- get_message_broker / override_message_broker -----------------------------------------------------


def test_get_message_broker_is_a_memory_broker_by_default():
    broker = get_message_broker()
    assert isinstance(broker, MemoryBroker)
    assert get_message_broker() is broker


@pytest.mark.parametrize(
    "broker",
    [MemoryBroker(), NullBroker(), TestBroker(copy_subscriptions=False)],
    ids=lambda broker: type(broker).__name__,  # the same in every xdist process, unlike repr's address
)
def test_every_broker_satisfies_the_broker_protocol(broker):
    assert isinstance(broker, Broker)


def test_override_message_broker_as_a_context_manager():
    default = get_message_broker()
    null = NullBroker()
    with override_message_broker(null) as in_force:
        assert in_force is null
        assert get_message_broker() is null
    assert get_message_broker() is default


def test_override_message_broker_as_a_decorator():
    default = get_message_broker()
    null = NullBroker()

    @override_message_broker(null)
    def publish_one(number):
        assert get_message_broker() is null
        get_message_broker().publish(Ping(number=number))
        return number * 10

    assert get_message_broker() is default
    assert publish_one(1) == 10
    assert publish_one(2) == 20  # usable more than once
    assert [m.number for m in null.published] == [1, 2]
    assert get_message_broker() is default


def test_nested_overrides_restore_the_previous_broker_each_time():
    default = get_message_broker()
    outer, inner = NullBroker(), TestBroker(copy_subscriptions=False)
    with override_message_broker(outer):
        with override_message_broker(inner):
            assert get_message_broker() is inner
        assert get_message_broker() is outer
    assert get_message_broker() is default


def test_override_restores_the_previous_broker_when_the_block_raises():
    default = get_message_broker()
    outer, inner = NullBroker(), NullBroker()
    with override_message_broker(outer):
        with pytest.raises(ZeroDivisionError), override_message_broker(inner):
            raise ZeroDivisionError
        assert get_message_broker() is outer
    assert get_message_broker() is default


def test_decorated_override_restores_the_previous_broker_when_the_function_raises():
    default = get_message_broker()

    @override_message_broker(NullBroker())
    def fails():
        raise KeyError("x")

    with pytest.raises(KeyError):
        fails()
    assert get_message_broker() is default


def test_nested_override_with_the_same_broker_twice_restores_the_one_in_between():
    first, second = NullBroker(), NullBroker()
    with override_message_broker(first):
        with override_message_broker(second):
            with override_message_broker(first):
                assert get_message_broker() is first
            assert get_message_broker() is second
        assert get_message_broker() is first


# --- MemoryBroker async dispatch through the tests' Redis (no worker) --------------------------------


@pytest.mark.django_db(transaction=True)  # publishing waits for a commit
def test_memory_broker_sends_one_task_per_wanted_async_handler_on_its_queue(redis_client):
    broker = MemoryBroker()
    broker.subscribe_async(Ping, async_record, queue_name=LOW_PRIORITY)
    broker.subscribe_async(Ping, async_record_too)
    broker.subscribe_async(Ping, async_on_follow_up, predicate=never)
    message = Ping(number=4)
    broker.publish(message)

    assert redis_client.llen("low") == 1
    assert redis_client.llen("default") == 1
    assert redis_client.llen("high") == 0
    assert calls == []  # async handlers never run in the publishing process

    sent = {q: queued_messages(redis_client, q)[0] for q in ("low", "default")}
    assert {s["task"] for s in sent.values()} == {"tasks.deliver"}
    assert sent["low"]["args"] == [message.to_json(), f"{MODULE}.async_record"]
    assert sent["default"]["args"] == [message.to_json(), f"{MODULE}.async_record_too"]
    assert Message.from_json(sent["low"]["args"][0]) == message

    deliveries = {d.handler: d for d in Delivery.objects.all()}
    assert set(deliveries) == {f"{MODULE}.async_record", f"{MODULE}.async_record_too"}
    low = deliveries[f"{MODULE}.async_record"]
    assert (low.message_id, low.queue, low.status, low.send_count) == (
        message.message_id,
        "low",
        Delivery.Status.PENDING,
        1,
    )
    assert low.message_type == Ping.message_name
    assert low.task_id == sent["low"]["id"]


@pytest.mark.django_db(transaction=True)  # publishing waits for a commit
def test_memory_broker_sends_nothing_when_the_async_predicate_is_false(redis_client):
    broker = MemoryBroker()
    broker.subscribe_async(Ping, async_record, predicate=even)
    broker.subscribe_async(Ping, async_record_too, queue_name=LOW_PRIORITY, predicate=even)
    broker.publish(Ping(number=3))
    assert redis_client.llen("default") == 0
    assert redis_client.llen("low") == 0
    assert Delivery.objects.count() == 0

    broker.publish(Ping(number=6))  # the same subscriptions do send when the predicate holds
    assert redis_client.llen("default") == 1
    assert redis_client.llen("low") == 1
    assert Delivery.objects.count() == 2


@pytest.mark.django_db(transaction=True)  # publishing waits for a commit
def test_memory_broker_publish_many_sends_one_task_per_message_and_handler(redis_client):
    broker = MemoryBroker()
    broker.subscribe_async(Ping, async_record)
    broker.subscribe_async(Ping, async_record_too)
    messages = [Ping(number=1), Ping(number=2), Ping(number=3)]
    broker.publish_many(messages)
    assert redis_client.llen("default") == 6
    keys = {(d.message_id, d.handler) for d in Delivery.objects.all()}
    assert len(keys) == 6
    assert {m for m, _ in keys} == {m.message_id for m in messages}


def delivery_count_when_called(message):
    calls.append(("delivery_count_when_called", Delivery.objects.count()))


@pytest.mark.django_db(transaction=True)  # publishing waits for a commit
def test_memory_broker_runs_sync_handlers_before_sending_async_deliveries(redis_client):
    broker = MemoryBroker()
    broker.subscribe_async(Ping, async_record)
    broker.subscribe(Ping, delivery_count_when_called)
    broker.publish(Ping(number=1))
    assert calls == [("delivery_count_when_called", 0)]
    assert Delivery.objects.count() == 1
    assert redis_client.llen("default") == 1


@pytest.mark.django_db(transaction=True)  # publishing waits for a commit
def test_memory_broker_raises_dispatch_error_when_the_broker_is_down_after_recording_deliveries():
    broker = MemoryBroker()
    broker.subscribe(Ping, record_sync)
    broker.subscribe_async(Ping, async_record)
    message = Ping(number=1)
    with broker_down(), pytest.raises(DispatchError):
        broker.publish(message)
    assert calls == [("record_sync", message)]  # sync handlers ran first
    delivery = Delivery.objects.get()
    assert (delivery.message_id, delivery.status) == (message.message_id, Delivery.Status.PENDING)


def test_memory_broker_with_only_sync_handlers_never_needs_the_broker():
    broker = MemoryBroker()
    broker.subscribe(Ping, record_sync)
    broker.subscribe_async(Ping, async_record, predicate=never)
    with broker_down():
        broker.publish(Ping(number=1))
    assert names() == ["record_sync"]


@pytest.mark.django_db(transaction=True)  # publishing waits for a commit
def test_one_task_per_message_and_handler_even_when_subscribed_through_a_base_type(redis_client):
    broker = MemoryBroker()
    broker.subscribe_async(Ping, async_record)
    broker.subscribe_async(LoudPing, async_record)
    broker.publish(LoudPing(number=1))
    assert Delivery.objects.count() == 1
    assert redis_client.llen("default") == 1
