"""Fixtures shared by the whole suite: the tests' Redis, real worker processes, users."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis as redis_lib

from config.celery_app import app
from tests.support.processes import CeleryWorker
from tests.support.publisher import publisher_reset
from tests.support.queues import purge_platform_queues


@pytest.fixture
def redis_client() -> Iterator[redis_lib.Redis]:
    """The tests' Redis database, emptied before the test (queues, unacked, locks)."""
    client = redis_lib.Redis.from_url(os.environ["TEST_REDIS_URL"])
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def celery_worker_process(transactional_db, redis_client) -> Iterator[CeleryWorker]:
    """A real ``celery worker`` subprocess on all three queues, stopped after the test."""
    worker = CeleryWorker()
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(autouse=True)
def fresh_publisher() -> Iterator[None]:
    """What a test's commits handed the publisher thread is sent before the next test starts,
    and each test starts with a new publisher."""
    yield
    publisher_reset()


@pytest.fixture(scope="session", autouse=True)
def platform_queues_as_declared() -> None:
    """On RabbitMQ, the platform's queues declared as this code declares them: a vhost an older
    release used holds them with other arguments (no x-max-priority), and RabbitMQ refuses to
    declare a queue again with different ones. The tests own their vhost, so they start afresh."""
    if not app.conf.broker_url.startswith("amqp"):
        return
    with app.connection_for_write() as connection:
        for queue in app.conf.task_queues:
            queue(connection.default_channel).delete()


@pytest.fixture
def clean_broker_queues(transactional_db, redis_client) -> None:
    """No message left over in the platform's queues, on Redis or RabbitMQ."""
    purge_platform_queues()


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests")


@pytest.fixture
def admin_client_logged_in(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """PBKDF2 costs most of a test's time; hashing strength is not under test here."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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
