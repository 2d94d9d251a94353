"""Fixtures shared by the whole suite: the tests' Redis, real worker processes, users."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis as redis_lib

from tests.support.processes import CeleryWorker


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
