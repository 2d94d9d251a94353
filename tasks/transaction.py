"""Public API: ``transactional`` and ``register_event``, events that exist only if the transaction
commits (DESIGN.md section 4).

```python
@transactional
def component_upload(*, author, name, source):
    component = Component.objects.create(...)
    register_event(ComponentUploaded(component_id=component.pk, author_id=author.pk))
    return component
```

``register_event(event, delay=timedelta(hours=1))`` holds the event's async deliveries in the
database until due (the relay sends them then); ``event_cancel(event.message_id)`` withdraws
them for good while they have not started.

The outbox lives in ``tasks.messaging.outbox``; this module is the front other code imports.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import transaction

from tasks.messaging.outbox import register_event
from tasks.models import Delivery
from tasks.reliability.delivery_state import deliveries_cancel

__all__ = ["event_cancel", "register_event", "transactional"]

P = ParamSpec("P")
R = TypeVar("R")


def transactional(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` inside ``transaction.atomic()`` (a savepoint when already in one)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with transaction.atomic():
            return func(*args, **kwargs)

    return wrapper


def event_cancel(message_id: uuid.UUID | str) -> int:
    """Cancel for good the async deliveries of a registered event that have not started (delayed,
    or queued on the broker); return how many. One running or finished is left as it is."""
    return deliveries_cancel(deliveries=Delivery.objects.filter(message_id=message_id))
