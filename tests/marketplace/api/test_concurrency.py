"""Parallel API writes to one component leave exact counts.

Each thread has its own test client and its own database connection, so every request is a
real transaction that commits (``transactional_db``). PostgreSQL runs 50 at once; SQLite has
one write lock for the whole file, so it runs 10 (they queue on the busy timeout) and proves
the same counts without 50 threads taking turns on one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections
from django.test import Client

from marketplace import services
from marketplace.models import Component, Download, Rating
from tasks.bus import NullBroker, TestBroker, override_message_broker
from tests.marketplace.factories import PublishedComponentFactory, UserFactory, issue_key
from tests.support.api import API, bearer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("api_rate_limit_cache")]


def parallel_count() -> int:
    return 50 if connection.vendor == "postgresql" else 10


def run_in_threads(call: Callable[[str], int], keys: list[str]) -> list[int]:
    """``call(key)`` in one thread per key, all released at once; their status codes."""
    barrier = threading.Barrier(len(keys))

    def one(key: str) -> int:
        try:
            barrier.wait(timeout=60)
            return call(key)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        return list(pool.map(one, keys))


@pytest.fixture
def component():
    return PublishedComponentFactory()


@pytest.fixture
def keys() -> list[str]:
    return [issue_key(UserFactory()) for _ in range(parallel_count())]


def test_parallel_ratings_by_different_users_leave_exact_count_and_average(component, keys):
    scores = [n % 5 + 1 for n in range(len(keys))]
    score_of = dict(zip(keys, scores, strict=True))

    def rate(key: str) -> int:
        return (
            Client()
            .put(
                f"{API}/components/{component.slug}/rating",
                {"score": score_of[key]},
                content_type="application/json",
                headers=bearer(key),
            )
            .status_code
        )

    with override_message_broker(NullBroker()) as broker:
        statuses = run_in_threads(rate, keys)

    assert statuses == [200] * len(keys)
    component.refresh_from_db()
    assert Rating.objects.filter(component=component).count() == len(keys) == component.rating_count
    expected_average = round(sum(scores) / len(scores), 2)
    assert float(component.rating_average) == pytest.approx(expected_average, abs=0.005)
    assert len(broker.published) == len(keys)


def test_parallel_ratings_by_one_user_leave_one_rating(component):
    key = issue_key(UserFactory())
    attempts = parallel_count()

    def rate(score: int) -> int:
        return (
            Client()
            .put(
                f"{API}/components/{component.slug}/rating",
                {"score": score},
                content_type="application/json",
                headers=bearer(key),
            )
            .status_code
        )

    with override_message_broker(NullBroker()):
        statuses = run_in_threads(rate, [n % 5 + 1 for n in range(attempts)])

    # Rows of one (user, component) are serialised by the component's row lock: every attempt
    # succeeds, and the last to commit wins.
    assert statuses == [200] * attempts
    component.refresh_from_db()
    assert Rating.objects.filter(component=component).count() == 1 == component.rating_count


def test_parallel_downloads_leave_exact_rows_and_counter(component, keys):
    def download(key: str) -> int:
        return Client().post(f"{API}/components/{component.slug}/download", headers=bearer(key)).status_code

    with override_message_broker(TestBroker()) as broker:
        statuses = run_in_threads(download, keys)
        # The counter follows in the background (update_download_stats); run those deliveries.
        ran = broker.process_messages()

    assert statuses == [200] * len(keys)
    assert ran == len(keys)
    assert Download.objects.filter(component=component).count() == len(keys)
    assert Component.objects.get(pk=component.pk).download_count == len(keys)
    assert services.component_download_count_refresh(component_id=component.pk) == len(keys)
