"""The in-process message bus: who handles which message, sync (in process) or async (Celery).

``get_message_broker()`` returns the broker in force: the process-wide ``MemoryBroker`` that
apps subscribe to from ``AppConfig.ready()``, unless a test overrides it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from django.utils.module_loading import import_string

from tasks.messages import Message
from tasks.queues import DEFAULT, validate_queue

if TYPE_CHECKING:
    from tasks.models import Delivery

logger = logging.getLogger(__name__)

Handler = Callable[[Any], Any]
Predicate = Callable[[Any], bool]


class SubscriptionError(ValueError):
    """A subscription that cannot work: a handler that cannot be imported by path, a bad queue."""


def handler_path(handler: Handler) -> str:
    """``module.function`` of a module-level function; SubscriptionError for anything else."""
    module = getattr(handler, "__module__", None)
    qualname = getattr(handler, "__qualname__", None)
    if not module or not qualname or "<" in qualname or "." in qualname or module == "__main__":
        raise SubscriptionError(
            f"async handler {handler!r} must be a module-level function, importable by path "
            "(no lambda, closure, method or partial): a worker process imports it by name"
        )
    path = f"{module}.{qualname}"
    try:
        importable = import_string(path) is handler
    except ImportError:
        importable = False
    if not importable:
        raise SubscriptionError(f"async handler {path} cannot be imported by that path, as a worker would")
    return path


def _describe(handler: Handler) -> str:
    module = getattr(handler, "__module__", "?")
    return f"{module}.{getattr(handler, '__qualname__', repr(handler))}"


@dataclass(frozen=True)
class Subscription:
    """One handler of one message type: sync (in process) or async (a Celery task on a queue)."""

    message_type: type[Message]
    handler: Handler
    is_async: bool
    queue_name: str | None = None
    predicate: Predicate | None = None

    @property
    def handler_path(self) -> str:
        return _describe(self.handler)

    def wants(self, message: Message) -> bool:
        return self.predicate is None or bool(self.predicate(message))


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
    ) -> None: ...

    def publish(self, message: Message) -> None: ...

    def publish_many(self, messages: list[Message]) -> None: ...

    def async_plan(self, message: Message) -> list[Subscription]: ...

    def publish_recorded(self, message: Message, deliveries: list[Delivery]) -> None: ...

    def subscriptions(self) -> list[Subscription]: ...


class _Registry:
    """Subscriptions by message type; shared by every broker."""

    def __init__(self, subscriptions: list[Subscription] | None = None) -> None:
        self._subscriptions: list[Subscription] = list(subscriptions or [])

    def subscribe(self, message_type: type[Message], handler: Handler, predicate: Predicate | None = None) -> None:
        """Run ``handler(message)`` in process when a ``message_type`` is published."""
        self._add(Subscription(message_type, handler, is_async=False, predicate=predicate))

    def subscribe_async(
        self,
        message_type: type[Message],
        handler: Handler,
        queue_name: str = DEFAULT,
        predicate: Predicate | None = None,
    ) -> None:
        """Run ``handler(message)`` on a worker, one Celery task per message, on ``queue_name``.

        The predicate runs at publish time: when it is false no task is sent at all.
        """
        handler_path(handler)
        try:
            validate_queue(queue_name)
        except ValueError as exc:
            raise SubscriptionError(str(exc)) from None
        self._add(Subscription(message_type, handler, is_async=True, queue_name=queue_name, predicate=predicate))

    def _add(self, subscription: Subscription) -> None:
        if not (isinstance(subscription.message_type, type) and issubclass(subscription.message_type, Message)):
            raise SubscriptionError(f"{subscription.message_type!r} is not a Message subclass")
        for existing in self._subscriptions:
            if (existing.message_type, existing.handler, existing.is_async) == (
                subscription.message_type,
                subscription.handler,
                subscription.is_async,
            ):
                return  # subscribing the same handler twice is a no-op
        self._subscriptions.append(subscription)

    def subscriptions(self) -> list[Subscription]:
        """Every subscription, in the order they were made."""
        return list(self._subscriptions)

    def subscriptions_for(self, message: Message) -> list[Subscription]:
        """Subscriptions whose type the message is an instance of (subscribing to a base type
        receives its subclasses), one per handler and mode: a handler subscribed to a type and
        to its base still runs once per message."""
        seen: set[tuple[Handler, bool]] = set()
        wanted = []
        for s in self._subscriptions:
            if isinstance(message, s.message_type) and (s.handler, s.is_async) not in seen:
                seen.add((s.handler, s.is_async))
                wanted.append(s)
        return wanted

    def async_plan(self, message: Message) -> list[Subscription]:
        """The async deliveries ``register_event`` records in the business transaction: none,
        for brokers that do not send to Celery."""
        return []

    def publish_recorded(self, message: Message, deliveries: list[Delivery]) -> None:
        """Publish a committed event whose deliveries ``register_event`` recorded."""
        self.publish(message)

    def _run_sync(self, message: Message) -> None:
        for subscription in self.subscriptions_for(message):
            if not subscription.is_async:
                # One handler failing never stops the others.
                _logging_errors(subscription, message, "sync handler failed", _run_if_wanted)

    def _async_wanted(self, message: Message) -> list[Subscription]:
        return [
            subscription
            for subscription in self.subscriptions_for(message)
            if subscription.is_async
            and _logging_errors(subscription, message, "predicate failed; no delivery for this handler", _wants)
        ]


def _run_if_wanted(subscription: Subscription, message: Message) -> None:
    if subscription.wants(message):
        subscription.handler(message)


def _wants(subscription: Subscription, message: Message) -> bool:
    return subscription.wants(message)


def _logging_errors(
    subscription: Subscription, message: Message, what: str, call: Callable[[Subscription, Message], Any]
) -> Any:
    """``call(subscription, message)``; an error is logged with message_id and handler, not raised."""
    try:
        return call(subscription, message)
    except Exception:
        logger.exception(what, extra={"message_id": str(message.message_id), "handler": subscription.handler_path})
        return None


class MemoryBroker(_Registry):
    """The production broker: sync handlers in process, async handlers as Celery tasks."""

    def publish(self, message: Message) -> None:
        """Run sync handlers, then send one delivery task per wanted async handler.

        A broker outage raises ``tasks.dispatch.DispatchError`` after the deliveries were
        recorded, so the sweeper re-sends them once the broker is back.
        """
        self.publish_many([message])

    def publish_many(self, messages: list[Message]) -> None:
        """Publish several messages; their async deliveries go out in one batch."""
        from tasks.dispatch import deliveries_send

        for message in messages:
            self._run_sync(message)
        deliveries_send([(m, s) for m in messages for s in self._async_wanted(m)])

    def async_plan(self, message: Message) -> list[Subscription]:
        """The async subscriptions that want this message (register_event and the relay)."""
        return self._async_wanted(message)

    def publish_recorded(self, message: Message, deliveries: list[Delivery]) -> None:
        """Sync handlers, then the already recorded deliveries: no database work left."""
        from tasks.dispatch import publish_deliveries

        self._run_sync(message)
        if deliveries:
            publish_deliveries(deliveries)


class NullBroker(_Registry):
    """Records what is published and runs nothing: for unit tests of domain code."""

    def __init__(self, subscriptions: list[Subscription] | None = None) -> None:
        super().__init__(subscriptions)
        self.published: list[Message] = []

    def publish(self, message: Message) -> None:
        self.published.append(message)

    def publish_many(self, messages: list[Message]) -> None:
        self.published.extend(messages)


class TestBroker(_Registry):
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
            self._run_sync(message)
            self.pending.extend((message, s) for s in self._async_wanted(message))

    def process_messages(self) -> int:
        """Run every waiting async delivery, and those their handlers publish, until none is left.

        Returns how many ran. Errors propagate, so a test sees a failing handler.
        """
        ran = 0
        while self.pending:
            message, subscription = self.pending.pop(0)
            # As a worker would: the message through JSON, the handler imported by its path.
            received = Message.from_json(json.loads(json.dumps(message.to_json())))
            import_string(subscription.handler_path)(received)
            ran += 1
        return ran


_default_broker = MemoryBroker()
_overrides: list[Broker] = []


def get_message_broker() -> Broker:
    """The broker in force: the innermost override, else the process-wide MemoryBroker."""
    return _overrides[-1] if _overrides else _default_broker


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
