"""Fixtures of the API tests: two users with keys, a published component, the events a request
registers (the rate-limit counters' fixture is in tests/conftest.py, shared with tests/e2e)."""

from __future__ import annotations

import pytest

from tasks.bus import NullBroker, override_message_broker
from tests.marketplace.factories import AuthorFactory, PublishedComponentFactory, UserFactory, issue_key


@pytest.fixture
def alice():
    return UserFactory(username="alice")


@pytest.fixture
def bob():
    return UserFactory(username="bob")


@pytest.fixture
def alice_key(alice) -> str:
    return issue_key(alice)


@pytest.fixture
def bob_key(bob) -> str:
    return issue_key(bob)


@pytest.fixture
def published(alice):
    return PublishedComponentFactory(author=AuthorFactory(user=alice), name="Fast Parser", slug="fast-parser")


class EventRecorder:
    """A NullBroker in force for the test; ``with events.committing():`` runs the on-commit
    callbacks (event publishing) of the requests inside the block, as a real commit would."""

    def __init__(self, capture_on_commit_callbacks) -> None:
        self.broker = NullBroker()
        self._capture = capture_on_commit_callbacks

    @property
    def published(self) -> list:
        return self.broker.published

    def committing(self):
        return self._capture(execute=True)


@pytest.fixture
def events(django_capture_on_commit_callbacks):
    recorder = EventRecorder(django_capture_on_commit_callbacks)
    with override_message_broker(recorder.broker):
        yield recorder
