"""Fixtures for the streams tests: sinks on the tests' Redis (or a RabbitMQ vhost), reset per test."""

from __future__ import annotations

import os

import pytest

from tasks.streams.sinks import sinks_reset
from tests.support.streams import RABBITMQ_URL


@pytest.fixture(autouse=True)
def stream_settings(settings):
    """Streams on the tests' Redis database, one process-wide sink per test."""
    settings.STREAMS_REDIS_URL = os.environ["TEST_REDIS_URL"]
    settings.STREAMS_RABBITMQ_URL = RABBITMQ_URL
    settings.STREAMS_SINKS = {}
    settings.STREAMS_DEFAULT_SINK = "redis"
    sinks_reset()
    yield settings
    sinks_reset()
