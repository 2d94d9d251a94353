"""Fixtures for the messaging tests."""

import pytest

from tasks.bus import get_message_broker
from tasks.messaging import brokers
from tests.support.bus import calls


@pytest.fixture(autouse=True)
def clean_calls():
    calls.clear()
    yield
    calls.clear()


@pytest.fixture
def default_broker():
    """The process-wide broker, its subscriptions restored after the test."""
    assert not brokers._overrides, "a previous test leaked an override"
    broker = get_message_broker()
    saved = list(broker._subscriptions)
    yield broker
    broker._subscriptions[:] = saved
