"""Fixtures for end-to-end and fault tests: an empty broker, fast-recovery process settings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from config.celery_app import app
from tests.support.processes import process_env
from tests.support.queues import purge_platform_queues


@pytest.fixture
def clean_broker(transactional_db) -> Iterator[None]:
    """Committed data for subprocesses, and no message left over from another test."""
    if app.conf.broker_url.startswith("redis"):
        redis.Redis.from_url(app.conf.broker_url).flushdb()
    else:
        purge_platform_queues()
    yield
    if not app.conf.broker_url.startswith("redis"):
        purge_platform_queues()


def fast_recovery_env(**overrides: str) -> dict[str, str]:
    """Process settings that make recovery quick enough to test: a 12 s visibility timeout
    (hard limit 5 s), the sweeper re-sending after 20 s, retries backing off at most 1 s."""
    values = {
        "CELERY_VISIBILITY_TIMEOUT": "12",
        "CELERY_TASK_TIME_LIMIT": "5",
        "CELERY_TASK_SOFT_TIME_LIMIT": "4",
        # Below the soft limit, as the settings require: a lock wait fails and retries first.
        "DATABASE_LOCK_TIMEOUT": "3",
        "DELIVERY_RESEND_AFTER": "20",
        "OUTBOX_RELAY_GRACE": "1",
        "OUTBOX_RELAY_INTERVAL": "0.5",
        "TASKS_RETRY_BACKOFF_MAX": "1",
        "REMAP_SIGTERM": "SIGQUIT",
    }
    values.update(overrides)
    return process_env(**values)


@pytest.fixture
def flag_path(tmp_path) -> str:
    """A file whose existence tells a misbehaving test handler to behave."""
    return os.fspath(tmp_path / "fixed.flag")
