"""Hostile input through the API: names that would break a notification are a 422 with a
message, and lists carry no metadata or source (only the detail shows metadata)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from marketplace.models import Author, Component
from marketplace.search import components_index
from tests.marketplace.factories import FANCY_BUTTON_SOURCE, AuthorFactory, PublishedComponentFactory
from tests.support.api import API, assert_error, bearer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_rate_limit_cache")]

BIG_METADATA = {"name": "Big", "version": "1.0.0", "description": "sparkles", "blob": "x" * 15_000}


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("Evil\nBcc: x@example.com", "U+000A"),
        ("Evil\r\nBcc: x", "U+000D"),
        ("tab\tname", "U+0009"),
        ("rtl\u202e", "U+202E"),
    ],
    ids=["lf", "crlf", "tab", "rtl-override"],
)
def test_upload_is_422_with_a_message_when_the_name_has_control_characters(client, alice_key, events, name, found):
    with events.committing():
        response = client.post(
            f"{API}/components",
            {"name": name, "source": FANCY_BUTTON_SOURCE},
            content_type="application/json",
            headers=bearer(alice_key),
        )

    body = assert_error(response, 422, "invalid")
    assert body["detail"] == (
        "body.payload.name: Value error, "
        f"must not contain control characters such as line breaks or tabs (found {found})"
    )
    assert not Component.objects.exists()
    assert not Author.objects.exists()
    assert events.published == []


def _published_with_big_metadata(alice) -> Component:
    component = PublishedComponentFactory(author=AuthorFactory(user=alice), name="Big", metadata=BIG_METADATA)
    components_index(queryset=Component.objects.filter(pk=component.pk))
    return component


@pytest.mark.parametrize("query", ["", "?q=big", "?author=alice"], ids=["all", "search", "by-author"])
def test_lists_show_no_metadata_nor_source_and_do_not_read_them(client, alice, query):
    component = _published_with_big_metadata(alice)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"{API}/components{query}")

    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["slug"] for item in items] == [component.slug]
    assert "metadata" not in items[0] and "source" not in items[0]
    assert len(response.content) < 2_000
    page_query = next(q["sql"] for q in queries.captured_queries if "LIMIT" in q["sql"])
    assert '"metadata"' not in page_query and '"source"' not in page_query


def test_my_components_list_shows_no_metadata(client, alice, alice_key):
    _published_with_big_metadata(alice)

    response = client.get(f"{API}/me/components", headers=bearer(alice_key))

    assert response.status_code == 200
    assert "metadata" not in response.json()["items"][0]


def test_detail_shows_the_metadata(client, alice):
    component = _published_with_big_metadata(alice)

    response = client.get(f"{API}/components/{component.slug}")

    assert response.status_code == 200
    assert response.json()["metadata"] == BIG_METADATA
