"""Contract tests of ``tasks.bus``: subscriptions, predicates, handler isolation, the Memory,
Null and Test brokers and ``override_message_broker`` (DESIGN.md section 4, issue 4)."""

import base64
import functools
import io
import json
import logging
import uuid
from dataclasses import dataclass

import pytest
from django.core.management import call_command

from tasks import bus
from tasks.bus import (
    Broker,
    MemoryBroker,
    NullBroker,
    SubscriptionError,
    TestBroker,
    get_message_broker,
    override_message_broker,
)
from tasks.dispatch import DispatchError
from tasks.messages import Message
from tasks.models import Delivery
from tasks.queues import DEFAULT, HIGH_PRIORITY, LOW_PRIORITY
from tests.support.broker import broker_down

MODULE = __name__


@dataclass(frozen=True)
class Ping(Message):
    number: int


@dataclass(frozen=True)
class LoudPing(Ping):
    volume: int = 11


@dataclass(frozen=True)
class FollowUp(Message):
    origin: uuid.UUID


@dataclass(frozen=True)
class Unrelated(Message):
    text: str


calls: list[tuple[str, Message]] = []


def record_sync(message):
    calls.append(("record_sync", message))


def record_other(message):
    calls.append(("record_other", message))


def failing_handler(message):
    calls.append(("failing_handler", message))
    raise RuntimeError("handler exploded")


def async_record(message):
    calls.append(("async_record", message))


def async_record_too(message):
    calls.append(("async_record_too", message))


def async_failing(message):
    raise RuntimeError("async handler exploded")


def async_publish_follow_up(message):
    calls.append(("async_publish_follow_up", message))
    get_message_broker().publish(FollowUp(origin=message.message_id))


def async_on_follow_up(message):
    calls.append(("async_on_follow_up", message))


def even(message) -> bool:
    return message.number % 2 == 0


def never(message) -> bool:
    return False


def exploding_predicate(message) -> bool:
    raise ValueError("predicate exploded")


class HandlerHolder:
    def method(self, message):
        calls.append(("method", message))

    @staticmethod
    def static(message):
        calls.append(("static", message))


def names() -> list[str]:
    return [name for name, _ in calls]


@pytest.fixture(autouse=True)
def clean_calls():
    calls.clear()
    yield
    calls.clear()


@pytest.fixture
def default_broker():
    """The process-wide broker, its subscriptions restored after the test."""
    assert not bus._overrides, "a previous test leaked an override"
    broker = get_message_broker()
    saved = list(broker._subscriptions)
    yield broker
    broker._subscriptions[:] = saved


# --- subscribe (sync) ----------------------------------------------------------------------------


def test_sync_handler_runs_at_publish_with_the_message():
    broker = MemoryBroker()
    broker.subscribe(Ping, record_sync)
    message = Ping(number=1)
    broker.publish(message)
    assert calls == [("record_sync", message)]


def test_sync_handler_is_not_called_for_another_message_type():
    broker = MemoryBroker()
    broker.subscribe(Ping, record_sync)
    broker.publish(Unrelated(text="x"))
    assert calls == []


def test_sync_handler_is_not_called_when_its_predicate_is_false():
    broker = MemoryBroker()
    broker.subscribe(Ping, record_sync, predicate=even)
    broker.subscribe(Ping, record_other, predicate=lambda m: m.number > 100)
    broker.publish(Ping(number=1))
    assert calls == []
    broker.publish(Ping(number=2))
    assert names() == ["record_sync"]


def test_sync_subscription_accepts_a_lambda_or_closure():
    seen = []
    broker = MemoryBroker()
    broker.subscribe(Ping, lambda m: seen.append(("lambda", m.number)))
    broker.subscribe(Ping, functools.partial(seen.append))
    broker.publish(Ping(number=3))
    assert seen[0] == ("lambda", 3)
    assert isinstance(seen[1], Ping)


def test_subscribing_to_a_base_type_receives_its_subclasses():
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe(Ping, record_sync)
    broker.subscribe(Message, record_other)
    broker.subscribe_async(Ping, async_record)
    loud = LoudPing(number=1)
    broker.publish(loud)
    assert calls == [("record_sync", loud), ("record_other", loud)]
    broker.process_messages()
    assert calls[-1] == ("async_record", loud)


def test_subscribing_to_a_subclass_does_not_receive_the_base_type():
    broker = MemoryBroker()
    broker.subscribe(LoudPing, record_sync)
    broker.publish(Ping(number=1))
    assert calls == []


def test_subscribing_the_same_handler_twice_is_a_no_op():
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe(Ping, record_sync)
    broker.subscribe(Ping, record_sync)
    broker.subscribe_async(Ping, async_record)
    broker.subscribe_async(Ping, async_record, queue_name=LOW_PRIORITY)
    assert len(broker.subscriptions()) == 2
    broker.publish(Ping(number=1))
    assert broker.process_messages() == 1
    assert names() == ["record_sync", "async_record"]


def test_subscribing_something_that_is_not_a_message_type_is_refused():
    broker = MemoryBroker()
    with pytest.raises(SubscriptionError):
        broker.subscribe(dict, record_sync)  # type: ignore[arg-type]
    with pytest.raises(SubscriptionError):
        broker.subscribe_async(Ping(number=1), async_record)  # type: ignore[arg-type]
    assert broker.subscriptions() == []


def test_subscriptions_lists_every_subscription_in_order():
    broker = MemoryBroker()
    broker.subscribe(Ping, record_sync, predicate=even)
    broker.subscribe_async(Ping, async_record, queue_name=HIGH_PRIORITY)
    broker.subscribe_async(Unrelated, async_record_too)
    listed = broker.subscriptions()
    assert [(s.message_type, s.handler, s.is_async, s.queue_name) for s in listed] == [
        (Ping, record_sync, False, None),
        (Ping, async_record, True, HIGH_PRIORITY),
        (Unrelated, async_record_too, True, DEFAULT),
    ]
    assert listed[0].predicate is even
    assert listed[1].handler_path == f"{MODULE}.async_record"
    listed.clear()
    assert len(broker.subscriptions()) == 3  # a copy, not the registry itself


def test_list_subscriptions_command_shows_every_subscription():
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe(Ping, record_sync, predicate=even)
    broker.subscribe_async(Unrelated, async_record, queue_name=LOW_PRIORITY)
    out = io.StringIO()
    with override_message_broker(broker):
        call_command("list_subscriptions", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    ping_line = next(line for line in lines if Ping.message_name in line)
    assert f"{MODULE}.record_sync" in ping_line
    assert "sync" in ping_line
    assert "predicate" in ping_line
    unrelated_line = next(line for line in lines if Unrelated.message_name in line)
    assert f"{MODULE}.async_record" in unrelated_line
    assert "async" in unrelated_line
    assert "low" in unrelated_line


# --- subscribe_async refusals -----------------------------------------------------------------------


def make_closure():
    def inner(message):
        calls.append(("closure", message))

    return inner


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(lambda m: None, id="lambda"),
        pytest.param(make_closure(), id="closure"),
        pytest.param(HandlerHolder().method, id="bound method"),
        pytest.param(HandlerHolder.static, id="staticmethod"),
        pytest.param(functools.partial(async_record), id="partial"),
        pytest.param(HandlerHolder(), id="callable instance"),
    ],
)
def test_subscribe_async_refuses_a_handler_a_worker_cannot_import(handler):
    broker = MemoryBroker()
    with pytest.raises(SubscriptionError, match="module-level function") as info:
        broker.subscribe_async(Ping, handler)
    assert "importable by path" in str(info.value)
    assert broker.subscriptions() == []


def test_subscribe_async_refuses_an_unknown_queue():
    broker = MemoryBroker()
    with pytest.raises(SubscriptionError, match="urgent"):
        broker.subscribe_async(Ping, async_record, queue_name="urgent")
    assert broker.subscriptions() == []


@pytest.mark.parametrize("queue_name", [HIGH_PRIORITY, DEFAULT, LOW_PRIORITY])
def test_subscribe_async_accepts_each_platform_queue(queue_name):
    broker = MemoryBroker()
    broker.subscribe_async(Ping, async_record, queue_name=queue_name)
    assert broker.subscriptions()[0].queue_name == queue_name


def test_subscribe_async_defaults_to_the_default_queue():
    broker = MemoryBroker()
    broker.subscribe_async(Ping, async_record)
    assert broker.subscriptions()[0].queue_name == DEFAULT == "default"


# --- handler isolation and logging -------------------------------------------------------------------


def test_a_failing_sync_handler_never_stops_the_others_and_is_logged(caplog):
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe(Ping, failing_handler)
    broker.subscribe(Ping, record_sync)
    broker.subscribe_async(Ping, async_record)
    message = Ping(number=1)
    with caplog.at_level(logging.ERROR, logger="tasks.bus"):
        broker.publish(message)  # does not raise
    assert names() == ["failing_handler", "record_sync"]
    assert broker.process_messages() == 1
    assert names()[-1] == "async_record"
    failures = [r for r in caplog.records if r.name == "tasks.bus" and r.levelno >= logging.ERROR]
    assert len(failures) == 1
    record = failures[0]
    assert record.message_id == str(message.message_id)
    assert record.handler == f"{MODULE}.failing_handler"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_a_failing_sync_handler_under_memory_broker_does_not_raise_from_publish(caplog):
    broker = MemoryBroker()
    broker.subscribe(Ping, failing_handler)
    broker.subscribe(Ping, record_sync)
    message = Ping(number=1)
    broker.publish(message)
    assert names() == ["failing_handler", "record_sync"]
    assert any(getattr(r, "message_id", None) == str(message.message_id) for r in caplog.records)


def test_a_failing_async_predicate_skips_only_that_handler_and_is_logged(caplog):
    broker = TestBroker(copy_subscriptions=False)
    broker.subscribe_async(Ping, async_record, predicate=exploding_predicate)
    broker.subscribe_async(Ping, async_record_too)
    message = Ping(number=1)
    with caplog.at_level(logging.ERROR, logger="tasks.bus"):
        broker.publish(message)
    assert [s.handler for _, s in broker.pending] == [async_record_too]
    record = next(r for r in caplog.records if r.name == "tasks.bus")
    assert record.message_id == str(message.message_id)
    assert record.handler == f"{MODULE}.async_record"


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


@pytest.mark.parametrize("broker", [MemoryBroker(), NullBroker(), TestBroker(copy_subscriptions=False)], ids=repr)
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


def queued_messages(redis_client, queue: str) -> list[dict]:
    """The Celery task messages waiting in a Redis queue list, decoded."""
    messages = []
    for raw in redis_client.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _ = json.loads(body)
        messages.append({"task": envelope["headers"]["task"], "id": envelope["headers"]["id"], "args": args})
    return messages


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
