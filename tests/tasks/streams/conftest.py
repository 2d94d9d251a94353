"""Fixtures for the streams tests: sinks on the tests' Redis (or a RabbitMQ vhost), reset per test."""

from __future__ import annotations

import os

import pytest

from tasks.streams.sinks import sinks_reset

# RabbitMQ for the RabbitMQ sink and consumer, whatever the suite's broker: TEST_STREAMS_RABBITMQ_URL,
# else the suite's broker when it is RabbitMQ, else the local server's default vhost.
_broker = os.environ.get("TEST_BROKER_URL", "")
RABBITMQ_URL = os.environ.get(
    "TEST_STREAMS_RABBITMQ_URL", _broker if _broker.startswith("amqp") else "amqp://guest:guest@127.0.0.1:5672//"
)


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
