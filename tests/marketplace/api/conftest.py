"""Fixtures of the API tests: two users with keys, a published component, the events a request
registers, and the rate-limit counters in the tests' Redis."""

from __future__ import annotations

import os
import uuid

import pytest

from tasks.bus import NullBroker, override_message_broker
from tests.marketplace.factories import AuthorFactory, PublishedComponentFactory, UserFactory, issue_key


@pytest.fixture
def api_rate_limit_cache(settings):
    """The rate-limit counters in the tests' Redis database, under a prefix of this test alone."""
    settings.CACHES = {
        **settings.CACHES,
        "ratelimit": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["TEST_REDIS_URL"],
            "KEY_PREFIX": f"api-test-{uuid.uuid4().hex}",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        },
    }
    settings.API_WRITE_RATE_LIMIT = "1000/m"
    return settings


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
