"""The brokers behind ``tasks.bus``: who runs a published message's handlers, and how.

``get_message_broker()`` returns the broker in force: the process-wide ``MemoryBroker`` that
apps subscribe to from ``AppConfig.ready()``, unless a test overrides it.

``Broker`` is the public contract (DESIGN.md section 4). ``RecordingBroker`` adds what the
outbox needs and only the platform calls: which async deliveries a message plans, and the
publishing of a committed event whose deliveries are already recorded.
"""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from tasks.messages import Message
from tasks.messaging.publisher import deliveries_record_and_publish, outbox_mark_sent, publisher_submit
from tasks.messaging.subscriptions import (
    Handler,
    Predicate,
    Subscription,
    SubscriptionRegistry,
    async_subscription_find,
)
from tasks.models import Delivery
from tasks.queues import DEFAULT


@runtime_checkable
class Broker(Protocol):
    """What every broker offers; see DESIGN.md section 4."""

    def subscribe(self, message_type: type[Message], handler: Handler, predicate: Predicate | None = None) -> None: ...

    def subscribe_async(
        self,
        message_type: type[Message],
        handler: Handler,
        queue_name: str = DEFAULT,
        predicate: Predicate | None = None,
        replaces: Iterable[str] = (),
        *,
        unique: Callable[[Any], str] | None = None,
        unique_for: timedelta | None = None,
        debounce: bool = False,
        rate_limit: str | None = None,
        rate_key: Callable[[Any], str] | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[[Any], str] | None = None,
    ) -> None: ...

    def publish(self, message: Message) -> None: ...

    def publish_many(self, messages: list[Message]) -> None: ...

    def subscriptions(self) -> list[Subscription]: ...


@runtime_checkable
class RecordingBroker(Broker, Protocol):
    """A broker the outbox can drive: ``register_event`` and the relay record deliveries first."""

    def async_plan(self, message: Message) -> list[Subscription]: ...

    def publish_recorded(self, message: Message, deliveries: list[Delivery], outbox_id: int) -> None: ...


class _LocalBroker(SubscriptionRegistry, abc.ABC):
    """A broker that sends nothing to Celery: no deliveries to record, publishing is all."""

    @abc.abstractmethod
    def publish(self, message: Message) -> None:
        """Take a published message (each local broker keeps or runs it its own way)."""

    def async_plan(self, message: Message) -> list[Subscription]:
        """None: this broker records no deliveries."""
        return []

    def publish_recorded(self, message: Message, deliveries: list[Delivery], outbox_id: int) -> None:
        """Publish a committed event as any other, and mark its outbox row sent."""
        self.publish(message)
        outbox_mark_sent(outbox_ids=[outbox_id])


class MemoryBroker(SubscriptionRegistry):
    """The production broker: sync handlers in process, async handlers as Celery tasks."""

    def publish(self, message: Message) -> None:
        """Run sync handlers, then send one delivery task per wanted async handler (after the
        commit, from the publisher thread, inside a transaction; at once outside one).

        Outside a transaction a broker outage raises ``DispatchError`` after the deliveries were
        recorded, so the sweeper re-sends them once the broker is back.
        """
        self.publish_many([message])

    def publish_many(self, messages: list[Message]) -> None:
        """Publish several messages; their async deliveries go out in one batch."""
        for message in messages:
            self.run_sync(message)
        deliveries_record_and_publish([(m, s) for m in messages for s in self.async_wanted(m)])

    def async_plan(self, message: Message) -> list[Subscription]:
        """The async subscriptions that want this message (register_event and the relay)."""
        return self.async_wanted(message)

    def publish_recorded(self, message: Message, deliveries: list[Delivery], outbox_id: int) -> None:
        """Sync handlers, then the already recorded deliveries to this process's publisher,
        which sends them and marks the outbox row: the commit never waits on the broker."""
        self.run_sync(message)
        publisher_submit(outbox_id=outbox_id, deliveries=deliveries)


class NullBroker(_LocalBroker):
    """Records what is published and runs nothing: for unit tests of domain code."""

    def __init__(self, subscriptions: list[Subscription] | None = None) -> None:
        super().__init__(subscriptions)
        self.published: list[Message] = []

    def publish(self, message: Message) -> None:
        self.published.append(message)

    def publish_many(self, messages: list[Message]) -> None:
        self.published.extend(messages)


class TestBroker(_LocalBroker):
    """Sync handlers run at publish; async deliveries wait until ``process_messages()``.

    Starts with a copy of the default broker's subscriptions, so domain tests exercise the real
    wiring; ``TestBroker(copy_subscriptions=False)`` starts empty.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, *, copy_subscriptions: bool = True) -> None:
        super().__init__(_default_broker.subscriptions() if copy_subscriptions else None)
        self.published: list[Message] = []
        self.pending: list[tuple[Message, Subscription]] = []

    def publish(self, message: Message) -> None:
        self.publish_many([message])

    def publish_many(self, messages: list[Message]) -> None:
        for message in messages:
            self.published.append(message)
            self.run_sync(message)
            self.pending.extend((message, s) for s in self.async_wanted(message))

    def process_messages(self) -> int:
        """Run every waiting async delivery, and those their handlers publish, until none is left.

        Returns how many ran. Errors propagate, so a test sees a failing handler.
        """
        ran = 0
        while self.pending:
            message, subscription = self.pending.pop(0)
            # As a worker would: the message through JSON, the handler found in the registry by
            # the path its delivery records.
            received = Message.from_json(json.loads(json.dumps(message.to_json())))
            found = self.async_subscription(type(received), subscription.handler_path)
            if found is None:
                raise LookupError(f"no async subscription of {received.message_name} for {subscription.handler_path}")
            found.handler(received)
            ran += 1
        return ran


_default_broker = MemoryBroker()
_overrides: list[Broker] = []


def get_message_broker() -> Broker:
    """The broker in force: the innermost override, else the process-wide MemoryBroker."""
    return _overrides[-1] if _overrides else _default_broker


def async_subscription_resolve(message_type: type[Message], path: str) -> Subscription | None:
    """The subscription a worker runs for a delivery of ``message_type`` recorded under handler
    ``path``: an async subscription of the broker in force (its own path or one it replaces)."""
    return async_subscription_find(get_message_broker().subscriptions(), message_type, path)


def async_subscriptions_by_handler() -> dict[str, Subscription]:
    """Each async handler's path and (its first) subscription in the running code, sorted by path."""
    found: dict[str, Subscription] = {}
    for subscription in get_message_broker().subscriptions():
        if subscription.is_async:
            found.setdefault(subscription.handler_path, subscription)
    return dict(sorted(found.items()))


def async_subscription_by_handler(path: str) -> Subscription | None:
    """The async subscription, of any message type, whose handler is ``path`` (its own path or
    one it replaces); None if the running code has none."""
    subscriptions = [s for s in get_message_broker().subscriptions() if s.is_async]
    exact = [s for s in subscriptions if s.handler_path == path]
    return (exact or [s for s in subscriptions if path in s.replaces] or [None])[0]


def get_recording_broker() -> RecordingBroker:
    """The broker in force, as the outbox drives it; TypeError for an override that cannot be."""
    broker = get_message_broker()
    if not isinstance(broker, RecordingBroker):
        raise TypeError(f"{type(broker).__name__} cannot record deliveries (async_plan, publish_recorded)")
    return broker


@contextlib.contextmanager
def override_message_broker(broker: Broker) -> Iterator[Broker]:
    """Use ``broker`` inside the block (or the decorated function), then restore the previous."""
    _overrides.append(broker)
    depth = len(_overrides)
    try:
        yield broker
    finally:
        # By position: the same broker may be overridden at several depths.
        del _overrides[depth - 1]
