"""A client that knows only the API: upload, find, rate and download, with a real worker doing
the background work the API's writes cause (publishing, indexing, counters, reputation)."""

from __future__ import annotations

import pytest
from django.test import Client

from marketplace.models import Author
from tests.marketplace.factories import FANCY_BUTTON_SOURCE, UserFactory, issue_key
from tests.support.api import API, bearer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.usefixtures("api_rate_limit_cache")]


def test_uploaded_component_is_published_found_rated_and_downloaded_through_the_api(celery_worker_process):
    client = Client()
    author_key, rater_key = issue_key(UserFactory(username="maker")), issue_key(UserFactory())

    uploaded = client.post(
        f"{API}/components",
        {"name": "Fancy Button", "source": FANCY_BUTTON_SOURCE},
        content_type="application/json",
        headers=bearer(author_key),
    )
    assert uploaded.status_code == 201, uploaded.content
    slug = uploaded.json()["slug"]

    def search_hits() -> list:
        return client.get(f"{API}/components", {"q": "sparkles"}).json()["items"]

    found = wait_until(search_hits, message=lambda: celery_worker_process.log()[-3000:])
    assert [(c["slug"], c["status"], c["version"]) for c in found] == [(slug, "published", "2.1.0")]

    rated = client.put(
        f"{API}/components/{slug}/rating", {"score": 4}, content_type="application/json", headers=bearer(rater_key)
    )
    downloaded = client.post(f"{API}/components/{slug}/download", headers=bearer(rater_key))
    assert rated.json()["rating_average"] == 4.0
    assert downloaded.json()["source"] == FANCY_BUTTON_SOURCE

    wait_until(lambda: client.get(f"{API}/components/{slug}").json()["download_count"] == 1)
    wait_until(lambda: Author.objects.get(user__username="maker").reputation == 4)
    assert client.get(f"{API}/authors/maker").json()["reputation"] == 4.0
    notifications = client.get(f"{API}/me/notifications", headers=bearer(author_key)).json()["items"]
    assert [n["subject"] for n in notifications] == ["Fancy Button 2.1.0 is published"]
