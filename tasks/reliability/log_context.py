"""Log context: ``task_id``, ``message_id`` and ``handler`` on every log record of a task.

``log_context(...)`` sets them for a block; ``ContextFilter`` (installed in settings.LOGGING)
copies them onto each record, so plain ``logging`` calls come out structured. It adds the
OpenTelemetry ``trace_id`` and ``span_id`` of the current span too, so a log line can be found
from its trace and back; there is no current span unless tracing is on.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

from opentelemetry import trace

FIELDS = ("task_id", "message_id", "handler", "trace_id", "span_id")
UNKNOWN = "-"
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("task_log_context", default=None)


@contextlib.contextmanager
def log_context(**values: object) -> Iterator[None]:
    """Add ``values`` to the log context inside the block."""
    token = _context.set({**(_context.get() or {}), **{k: str(v) for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Puts the context fields on every record ('-' where unknown), unless ``extra=`` did."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = {**(_context.get() or {}), **_trace_fields()}
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, context.get(name, UNKNOWN))
        return True


def _trace_fields() -> dict[str, str]:
    # The W3C text forms (32 and 16 hex digits), as collectors and trace UIs show them.
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}
