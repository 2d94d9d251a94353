"""Fixtures of the marketplace tests: a broker that records instead of delivering, and commits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from tasks.bus import NullBroker, override_message_broker


@pytest.fixture
def null_broker() -> Iterator[NullBroker]:
    """A NullBroker in force for the test: ``null_broker.published`` lists what was published."""
    broker = NullBroker()
    with override_message_broker(broker):
        yield broker


@pytest.fixture
def committed(django_capture_on_commit_callbacks) -> Callable[[], AbstractContextManager]:
    """``with committed():`` runs the on-commit callbacks (the publishes) at the end of the block."""
    return lambda: django_capture_on_commit_callbacks(execute=True)
