"""Public API: the in-process message bus (DESIGN.md section 4).

```python
from tasks.bus import get_message_broker, override_message_broker, NullBroker, TestBroker

broker = get_message_broker()
broker.subscribe(ComponentUploaded, handler)  # sync, in process
broker.subscribe_async(ComponentUploaded, handler, queue_name=LOW_PRIORITY)  # a Celery task
```

The brokers live in ``tasks.messaging.brokers``; this module is the front other code imports.
"""

from tasks.messaging.brokers import (
    Broker,
    MemoryBroker,
    NullBroker,
    TestBroker,
    get_message_broker,
    override_message_broker,
)
from tasks.messaging.subscriptions import Handler, Predicate, Subscription, SubscriptionError

__all__ = [
    "Broker",
    "Handler",
    "MemoryBroker",
    "NullBroker",
    "Predicate",
    "Subscription",
    "SubscriptionError",
    "TestBroker",
    "get_message_broker",
    "override_message_broker",
]
