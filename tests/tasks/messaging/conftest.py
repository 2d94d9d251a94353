"""Fixtures for the messaging tests."""

import pytest

from tasks.bus import NullBroker, get_message_broker, override_message_broker
from tasks.messaging import brokers
from tests.support.bus import calls, seen


@pytest.fixture(autouse=True)
def clean_calls():
    calls.clear()
    seen.clear()
    yield
    calls.clear()
    seen.clear()


@pytest.fixture
def null_broker():
    """A NullBroker in force for the test: it records what is published and delivers nothing."""
    with override_message_broker(NullBroker()) as broker:
        yield broker


@pytest.fixture
def default_broker():
    """The process-wide broker, its subscriptions restored after the test."""
    assert not brokers._overrides, "a previous test leaked an override"
    broker = get_message_broker()
    saved = list(broker._subscriptions)
    yield broker
    broker._subscriptions[:] = saved
