"""A broker that is down, for tests of what happens when publishing fails."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from tasks.messaging import deliveries as dispatch
from tests.support.processes import free_port


@contextlib.contextmanager
def broker_down() -> Iterator[None]:
    """Point dispatch at a Redis port nothing listens on; restore the real pool afterwards.

    Celery reads ``CELERY_BROKER_WRITE_URL`` from the environment before its settings, and
    ``tasks.messaging.deliveries._producer_pool`` builds its pool from ``connection_for_write`` when
    ``_pool`` is empty.
    """
    saved_pool, saved_url = dispatch._pool, os.environ.get("CELERY_BROKER_WRITE_URL")
    os.environ["CELERY_BROKER_WRITE_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    dispatch._pool = None
    try:
        yield
    finally:
        dispatch._pool = saved_pool
        if saved_url is None:
            os.environ.pop("CELERY_BROKER_WRITE_URL", None)
        else:
            os.environ["CELERY_BROKER_WRITE_URL"] = saved_url
