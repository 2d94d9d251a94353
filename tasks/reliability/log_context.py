"""Log context: ``task_id``, ``message_id`` and ``handler`` on every log record of a task.

``log_context(...)`` sets them for a block; ``ContextFilter`` (installed in settings.LOGGING)
copies them onto each record, so plain ``logging`` calls come out structured.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

FIELDS = ("task_id", "message_id", "handler")
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
        context = _context.get() or {}
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, context.get(name, "-"))
        return True
