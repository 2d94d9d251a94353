"""Helpers shared by the API tests: tokens, auth headers, and the rate-limit cache in the tests' Redis."""

from __future__ import annotations

import os
import uuid

import pytest

from marketplace import services

API = "/api/v1"


def issue_key(user, **kwargs) -> str:
    """A fresh API key of ``user`` (through the service, as the admin and the command do)."""
    _, key = services.api_token_issue(user=user, **kwargs)
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


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
