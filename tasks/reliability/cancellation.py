"""Cooperative cancel of a running job: ``cancel_requested()`` and ``JobCancelled``.

```python
from tasks.jobs import JobCancelled, cancel_requested

def reindex_all(event):
    for batch in batches():
        if cancel_requested():
            raise JobCancelled("stopped by an operator")  # its work rolls back; the delivery ends cancelled
        index(batch)
```

A cancel (``event_cancel``, the admin, ``manage.py deliveries_cancel``) of a delivery that is
running records a request; the handler asks for it where stopping is safe. Raising
``JobCancelled`` rolls the handler's transaction back, as any failure does, but the delivery
ends **cancelled**: no retry, no dead letter. A handler that never asks runs to its end.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

from tasks.reliability.delivery_state import delivery_cancel_requested
from tasks.reliability.platform_task import PermanentError

_running: ContextVar[tuple[uuid.UUID, str] | None] = ContextVar("running_delivery", default=None)


class JobCancelled(PermanentError):
    """Raised by a handler that stops on a cancel request: the delivery ends cancelled."""


@contextlib.contextmanager
def delivery_running(*, message_id: uuid.UUID, handler: str) -> Iterator[None]:
    """Inside the block, ``cancel_requested()`` asks about this delivery."""
    token = _running.set((message_id, handler))
    try:
        yield
    finally:
        _running.reset(token)


def cancel_requested() -> bool:
    """Whether a cancel was asked for the delivery this code runs for (one query; False outside
    a delivery)."""
    running = _running.get()
    return running is not None and delivery_cancel_requested(message_id=running[0], handler=running[1])
