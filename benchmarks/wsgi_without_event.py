"""The project's WSGI application with ``register_event`` in the marketplace services made a no-op.

The baseline of ``api_write.py``: the same view, middleware, rate limit, transaction and Download
insert as ``config.wsgi``, minus the event (no outbox or Delivery row, no publish after commit),
so the difference between the two is what registering an event costs a write request.
"""

# config.wsgi first: it sets Django up, which the marketplace modules need before import.
from config.wsgi import application
from marketplace import services
from tasks.messages import Message


def _no_event(message: Message) -> None:
    """Does nothing: the benchmark baseline, the identical code path without the event."""


services.register_event = _no_event

__all__ = ["application"]
