"""A second database connection in the test process, as a worker has one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper


@contextlib.contextmanager
def other_connection() -> Iterator[BaseDatabaseWrapper]:
    """A second connection to the test database: it sees what a worker would, committed rows only."""
    other = connections.create_connection("default")
    try:
        yield other
    finally:
        other.close()
