"""Contract tests of subscriptions: sync and async subscribe, predicates, refusals, handler
isolation and logging (DESIGN.md section 4)."""

import functools
import io
import logging

import pytest
from django.core.management import call_command

from tasks.bus import (
    MemoryBroker,
    SubscriptionError,
    TestBroker,
    override_message_broker,
)
from tasks.messages import Message
from tasks.queues import DEFAULT, HIGH_PRIORITY, LOW_PRIORITY
from tests.support.bus import (
    MODULE,
    HandlerHolder,
    LoudPing,
    Ping,
    Unrelated,
    async_record,
    async_record_too,
    calls,
    even,
    exploding_predicate,
    failing_handler,
    names,
    record_other,
    record_sync,
)

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


@pytest.mark.parametrize(
    ("limits", "error"),
    [
        pytest.param({"rate_limit": "fast"}, "is not a rate", id="unreadable rate"),
        pytest.param({"rate_limit": "0/second"}, "at least one job", id="zero rate"),
        pytest.param({"concurrency": 0}, "at least 1", id="zero concurrency"),
        pytest.param({"concurrency": True}, "at least 1", id="bool concurrency"),
        pytest.param({"rate_key": str}, "needs rate_limit", id="rate key without rate"),
        pytest.param({"concurrency_key": str}, "needs concurrency", id="concurrency key without limit"),
    ],
)
def test_subscribe_async_refuses_flow_limits_that_cannot_work(limits, error):
    broker = MemoryBroker()
    with pytest.raises(SubscriptionError, match=error):
        broker.subscribe_async(Ping, async_record, **limits)
    assert broker.subscriptions() == []


def test_subscribe_async_keeps_the_declared_flow_limits():
    broker = MemoryBroker()
    broker.subscribe_async(Ping, async_record, rate_limit="60 per minute", concurrency=2, concurrency_key=str)
    (subscription,) = broker.subscriptions()
    assert (subscription.rate_limit, subscription.concurrency, subscription.concurrency_key) == (
        "60 per minute",
        2,
        str,
    )


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
    with caplog.at_level(logging.ERROR, logger="tasks.messaging.subscriptions"):
        broker.publish(message)  # does not raise
    assert names() == ["failing_handler", "record_sync"]
    assert broker.process_messages() == 1
    assert names()[-1] == "async_record"
    failures = [r for r in caplog.records if r.name == "tasks.messaging.subscriptions" and r.levelno >= logging.ERROR]
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
    with caplog.at_level(logging.ERROR, logger="tasks.messaging.subscriptions"):
        broker.publish(message)
    assert [s.handler for _, s in broker.pending] == [async_record_too]
    record = next(r for r in caplog.records if r.name == "tasks.messaging.subscriptions")
    assert record.message_id == str(message.message_id)
    assert record.handler == f"{MODULE}.async_record"
