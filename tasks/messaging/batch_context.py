"""Which batch the deliveries recorded now belong to (``tasks.batches``): set around the code that
enqueues a batch's members, read where deliveries are built."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_current: ContextVar[int | None] = ContextVar("platform_batch", default=None)


def current_batch_id() -> int | None:
    """The batch the deliveries built now join, or None."""
    return _current.get()


@contextlib.contextmanager
def batch_context(batch_id: int) -> Iterator[None]:
    """Deliveries built inside the block join batch ``batch_id``."""
    token = _current.set(batch_id)
    try:
        yield
    finally:
        _current.reset(token)
