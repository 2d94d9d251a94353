"""Subscribe test handlers on the process-wide broker for one test, as ``ready()`` would.

A worker (and ``tasks.deliver`` run in process) finds a delivery's handler in the registry, so
a test handler must be subscribed async for its message type before a delivery can run it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from tasks.bus import Broker, get_message_broker
from tasks.messages import Message
from tasks.messaging import brokers
from tasks.messaging.subscriptions import Handler


@contextlib.contextmanager
def subscribed_by(subscribe: Callable[[Broker], None]) -> Iterator[None]:
    """Run ``subscribe(broker)`` on the default broker; its subscriptions are undone after."""
    assert not brokers._overrides, "subscribe on the default broker, outside override_message_broker"
    broker = get_message_broker()
    saved = list(broker._subscriptions)
    try:
        subscribe(broker)
        yield
    finally:
        broker._subscriptions[:] = saved


@contextlib.contextmanager
def subscribed_async(message_type: type[Message], handlers: Iterable[Handler], **options: object) -> Iterator[None]:
    """Subscribe each handler async to ``message_type`` on the default broker; restore after."""

    def subscribe(broker: Broker) -> None:
        for handler in handlers:
            broker.subscribe_async(message_type, handler, **options)

    with subscribed_by(subscribe):
        yield
