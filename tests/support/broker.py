"""Where this process publishes, for tests: another broker, or one that is down."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from tasks.messaging import deliveries as dispatch
from tests.support.processes import free_port
from tests.support.publisher import publisher_reset


@contextlib.contextmanager
def publishing_to(url: str) -> Iterator[None]:
    """Publish from this process to the broker at ``url`` inside the block; restore the real
    pool afterwards.

    Celery reads ``CELERY_BROKER_WRITE_URL`` from the environment before its settings, and
    ``tasks.messaging.deliveries._producer_pool`` builds its pool from ``connection_for_write`` when
    ``_pool`` is empty. What commits handed the publisher inside the block is tried before the
    block ends (against ``url``), and the publisher starts afresh afterwards (not paused by
    failures).
    """
    saved_pool, saved_url = dispatch._pool, os.environ.get("CELERY_BROKER_WRITE_URL")
    os.environ["CELERY_BROKER_WRITE_URL"] = url
    dispatch._pool = None
    try:
        yield
    finally:
        publisher_reset()
        if dispatch._pool is not None:
            with contextlib.suppress(Exception):
                dispatch._pool[1].connections.force_close_all()
        dispatch._pool = saved_pool
        if saved_url is None:
            os.environ.pop("CELERY_BROKER_WRITE_URL", None)
        else:
            os.environ["CELERY_BROKER_WRITE_URL"] = saved_url


@contextlib.contextmanager
def broker_down() -> Iterator[None]:
    """Publish to a Redis port nothing listens on inside the block (see ``publishing_to``)."""
    with publishing_to(f"redis://127.0.0.1:{free_port()}/0"):
        yield
