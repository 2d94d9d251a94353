"""``/components``: list and search, detail, upload and new versions. Happy path, no token,
wrong user, bad input, and the events each write registers (NullBroker, on-commit callbacks run)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from marketplace import services
from marketplace.events import ComponentUploaded
from marketplace.models import Author, Component
from marketplace.search import components_index
from tests.marketplace.factories import VALID_SOURCE, AuthorFactory, ComponentFactory, PublishedComponentFactory
from tests.support.api import API, assert_error, bearer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_rate_limit_cache")]


# --- list and search -------------------------------------------------------------------------


def test_list_shows_only_published_components_newest_first_when_anonymous(client, alice):
    author = AuthorFactory(user=alice)
    older = PublishedComponentFactory(author=author, created_at=timezone.now())
    newer = PublishedComponentFactory(author=author)
    Component.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(days=1))
    ComponentFactory(author=author)  # pending: not listed

    response = client.get(f"{API}/components")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [c["slug"] for c in body["items"]] == [newer.slug, older.slug]
    assert body["items"][0]["author"] == "alice"
    assert "source" not in body["items"][0]


def test_list_search_finds_components_by_words_of_their_name_when_q_is_given(client, alice):
    author = AuthorFactory(user=alice)
    parser = PublishedComponentFactory(author=author, name="YAML parser")
    PublishedComponentFactory(author=author, name="HTTP client")
    components_index(queryset=Component.objects.all())

    body = client.get(f"{API}/components", {"q": "parser"}).json()

    assert [c["slug"] for c in body["items"]] == [parser.slug]


def test_list_filters_by_author_when_author_is_given(client, alice, bob):
    mine = PublishedComponentFactory(author=AuthorFactory(user=alice))
    PublishedComponentFactory(author=AuthorFactory(user=bob))

    body = client.get(f"{API}/components", {"author": "alice"}).json()

    assert [c["slug"] for c in body["items"]] == [mine.slug]


def test_list_pages_with_limit_and_offset_when_there_are_more_than_a_page(client, alice):
    author = AuthorFactory(user=alice)
    slugs = [PublishedComponentFactory(author=author).slug for _ in range(5)]

    first = client.get(f"{API}/components", {"limit": 2}).json()
    third = client.get(f"{API}/components", {"limit": 2, "offset": 4}).json()

    assert first["count"] == 5 and len(first["items"]) == 2
    listed = {c["slug"] for c in first["items"]} | {c["slug"] for c in third["items"]}
    assert len(third["items"]) == 1 and listed <= set(slugs)


def test_list_of_pending_status_shows_only_the_callers_own_when_a_token_is_given(client, alice, bob, alice_key):
    mine = ComponentFactory(author=AuthorFactory(user=alice))
    ComponentFactory(author=AuthorFactory(user=bob))

    body = client.get(f"{API}/components", {"status": "pending"}, headers=bearer(alice_key)).json()

    assert [c["slug"] for c in body["items"]] == [mine.slug]


def test_list_of_pending_status_is_401_when_anonymous(client):
    assert_error(client.get(f"{API}/components", {"status": "pending"}), 401, "unauthorized")


@pytest.mark.parametrize(
    "params",
    [{"limit": 101}, {"limit": 0}, {"offset": -1}, {"offset": 10**30}, {"status": "deleted"}, {"author": "a b"}],
)
def test_list_is_422_when_paging_or_filters_are_invalid(client, params):
    body = assert_error(client.get(f"{API}/components", params), 422, "invalid")
    assert body["errors"]


# --- detail --------------------------------------------------------------------------------


def test_detail_shows_a_published_component_when_anonymous(client, published):
    response = client.get(f"{API}/components/{published.slug}")

    assert response.status_code == 200
    assert response.json()["name"] == "Fast Parser"
    assert response.json()["status"] == "published"


def test_detail_of_a_pending_component_is_404_for_others_and_200_for_its_author(client, alice, bob_key, alice_key):
    pending = ComponentFactory(author=AuthorFactory(user=alice))

    assert_error(client.get(f"{API}/components/{pending.slug}", headers=bearer(bob_key)), 404, "not_found")
    assert client.get(f"{API}/components/{pending.slug}", headers=bearer(alice_key)).status_code == 200


def test_detail_is_404_when_no_component_has_the_slug(client):
    assert_error(client.get(f"{API}/components/nothing-here"), 404, "not_found")


def test_detail_is_422_when_the_slug_has_characters_no_slug_has(client):
    assert_error(client.get(f"{API}/components/a%20b"), 422, "invalid")


# --- upload --------------------------------------------------------------------------------


def test_upload_stores_a_pending_component_and_registers_component_uploaded(client, alice, alice_key, events):
    with events.committing():
        response = client.post(
            f"{API}/components",
            {"name": "Fast Parser", "source": VALID_SOURCE.format(name="Fast Parser")},
            content_type="application/json",
            headers=bearer(alice_key),
        )

    assert response.status_code == 201, response.content
    component = Component.objects.get()
    assert response.json()["slug"] == component.slug == "fast-parser"
    assert component.status == Component.Status.PENDING
    assert component.author.user == alice
    assert [(type(e), e.component_id, e.author_id) for e in events.published] == [
        (ComponentUploaded, component.pk, component.author_id)
    ]


def test_upload_is_401_without_a_token(client, events):
    with events.committing():
        response = client.post(f"{API}/components", {"name": "x", "source": "y"}, content_type="application/json")

    assert_error(response, 401, "unauthorized")
    assert not Component.objects.exists()
    assert events.published == []


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "", "source": "---\nname: x\n---\n"},
        {"name": "   ", "source": "---\nname: x\n---\n"},  # refused by the service (ValidationFailed)
        {"name": "x" * 201, "source": "s"},
        {"name": "x"},
        {"name": "x", "source": 12},
        {"name": "x", "source": "a\x00b"},
        {"name": "x", "source": "\ud800"},
        ["not", "an", "object"],
    ],
)
def test_upload_is_422_and_writes_nothing_when_the_payload_is_invalid(client, alice_key, events, payload):
    with events.committing():
        response = client.post(f"{API}/components", payload, content_type="application/json", headers=bearer(alice_key))

    assert_error(response, 422, "invalid")
    assert not Component.objects.exists()
    assert not Author.objects.exists()  # no profile left behind by a refused first upload
    assert events.published == []


def test_upload_is_400_when_the_body_is_not_json(client, alice_key):
    response = client.post(f"{API}/components", "{not json", content_type="application/json", headers=bearer(alice_key))

    assert_error(response, 400, "bad_request")


def test_upload_is_413_and_writes_nothing_when_the_source_is_over_the_limit(client, alice_key, events):
    source = "---\nname: big\n---\n" + "x" * services.MAX_SOURCE_BYTES

    with events.committing():
        response = client.post(
            f"{API}/components",
            {"name": "big", "source": source},
            content_type="application/json",
            headers=bearer(alice_key),
        )

    assert_error(response, 413, "too_large")
    assert not Component.objects.exists()
    assert events.published == []


def test_upload_is_413_when_the_request_body_is_over_data_upload_max_memory_size(client, alice_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024

    response = client.post(
        f"{API}/components",
        {"name": "big", "source": "x" * 2048},
        content_type="application/json",
        headers=bearer(alice_key),
    )

    assert_error(response, 413, "too_large")
    assert not Component.objects.exists()


# --- new version ---------------------------------------------------------------------------


def test_new_version_by_the_author_makes_it_pending_and_registers_component_uploaded(
    client, published, alice_key, events
):
    source = VALID_SOURCE.format(name="Fast Parser").replace("1.0.0", "2.0.0")

    with events.committing():
        response = client.post(
            f"{API}/components/{published.slug}/versions",
            {"source": source},
            content_type="application/json",
            headers=bearer(alice_key),
        )

    assert response.status_code == 200, response.content
    published.refresh_from_db()
    assert published.source == source and published.status == Component.Status.PENDING
    assert [(type(e), e.component_id) for e in events.published] == [(ComponentUploaded, published.pk)]


def test_new_version_is_403_and_changes_nothing_when_sent_by_another_user(client, published, bob_key, events):
    with events.committing():
        response = client.post(
            f"{API}/components/{published.slug}/versions",
            {"source": "---\nname: evil\n---\n"},
            content_type="application/json",
            headers=bearer(bob_key),
        )

    assert_error(response, 403, "forbidden")
    published.refresh_from_db()
    assert published.status == Component.Status.PUBLISHED and "evil" not in published.source
    assert events.published == []


def test_new_version_is_404_for_another_users_pending_component(client, alice, bob_key):
    pending = ComponentFactory(author=AuthorFactory(user=alice))

    response = client.post(
        f"{API}/components/{pending.slug}/versions",
        {"source": "s"},
        content_type="application/json",
        headers=bearer(bob_key),
    )

    assert_error(response, 404, "not_found")


def test_new_version_is_401_without_a_token(client, published):
    response = client.post(
        f"{API}/components/{published.slug}/versions", {"source": "s"}, content_type="application/json"
    )

    assert_error(response, 401, "unauthorized")


def test_new_version_is_422_when_the_source_is_empty(client, published, alice_key):
    response = client.post(
        f"{API}/components/{published.slug}/versions",
        {"source": ""},
        content_type="application/json",
        headers=bearer(alice_key),
    )

    assert_error(response, 422, "invalid")


def test_new_version_is_413_when_the_source_is_over_the_limit(client, published, alice_key):
    response = client.post(
        f"{API}/components/{published.slug}/versions",
        {"source": "x" * (services.MAX_SOURCE_BYTES + 1)},
        content_type="application/json",
        headers=bearer(alice_key),
    )

    assert_error(response, 413, "too_large")
    published.refresh_from_db()
    assert published.status == Component.Status.PUBLISHED
