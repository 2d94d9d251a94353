"""Fixtures of the marketplace tests: a broker that records instead of delivering, what it
recorded, and commits."""

from __future__ import annotations

import dataclasses
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


@pytest.fixture
def published_facts(null_broker: NullBroker) -> Callable[[], list[tuple[type, dict]]]:
    """``published_facts()``: each message the null broker got as (type, its own fields), what a
    test can predict (not the message id and time every message carries)."""
    base_fields = {"message_id", "occurred_at"}

    def facts() -> list[tuple[type, dict]]:
        return [
            (type(m), {k: v for k, v in dataclasses.asdict(m).items() if k not in base_fields})
            for m in null_broker.published
        ]

    return facts
