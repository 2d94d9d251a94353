"""The marketplace JSON API, endpoint by endpoint: happy path, no token, wrong user, bad input,
and the events each write registers (NullBroker, with on-commit callbacks run)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from marketplace import services
from marketplace.events import ComponentDownloaded, ComponentRated, ComponentUploaded
from marketplace.models import Author, Component, Download, Notification, Rating
from marketplace.search import components_index
from tasks.bus import NullBroker, override_message_broker
from tests.marketplace.api_support import API, api_rate_limit_cache, bearer, issue_key  # noqa: F401
from tests.marketplace.factories import (
    VALID_SOURCE,
    AuthorFactory,
    ComponentFactory,
    NotificationFactory,
    PublishedComponentFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_rate_limit_cache")]


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


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    return body


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


# --- rating --------------------------------------------------------------------------------


def rate(client, slug: str, key: str | None, score) -> object:
    headers = bearer(key) if key else {}
    return client.put(
        f"{API}/components/{slug}/rating", {"score": score}, content_type="application/json", headers=headers
    )


def test_rating_stores_the_score_and_registers_component_rated(client, published, bob, bob_key, events):
    with events.committing():
        response = rate(client, published.slug, bob_key, 4)

    assert response.status_code == 200, response.content
    assert response.json() == {"component": published.slug, "score": 4, "rating_count": 1, "rating_average": 4.0}
    assert Rating.objects.get().user == bob
    assert [(type(e), e.component_id, e.user_id, e.score) for e in events.published] == [
        (ComponentRated, published.pk, bob.pk, 4)
    ]


def test_rating_again_replaces_the_users_rating_when_they_change_their_mind(client, published, bob_key, alice_key):
    rate(client, published.slug, alice_key, 5)
    rate(client, published.slug, bob_key, 1)

    response = rate(client, published.slug, bob_key, 3)

    assert response.json()["rating_count"] == 2
    assert response.json()["rating_average"] == 4.0
    assert Rating.objects.count() == 2


@pytest.mark.parametrize("score", [0, 6, -1, "five", None, 2.5, True])
def test_rating_is_422_and_writes_nothing_when_the_score_is_not_1_to_5(client, published, bob_key, events, score):
    with events.committing():
        assert_error(rate(client, published.slug, bob_key, score), 422, "invalid")
    assert not Rating.objects.exists()
    assert events.published == []


def test_rating_is_409_when_the_component_is_not_published(client, alice, alice_key):
    own_pending = ComponentFactory(author=AuthorFactory(user=alice))

    assert_error(rate(client, own_pending.slug, alice_key, 4), 409, "conflict")
    assert not Rating.objects.exists()


def test_rating_is_404_for_another_users_pending_component(client, alice, bob_key):
    pending = ComponentFactory(author=AuthorFactory(user=alice))

    assert_error(rate(client, pending.slug, bob_key, 4), 404, "not_found")


def test_rating_is_401_without_a_token(client, published):
    assert_error(rate(client, published.slug, None, 4), 401, "unauthorized")
    assert not Rating.objects.exists()


# --- download ------------------------------------------------------------------------------


def test_download_returns_the_source_records_it_and_registers_component_downloaded(
    client, published, bob, bob_key, events
):
    with events.committing():
        response = client.post(f"{API}/components/{published.slug}/download", headers=bearer(bob_key))

    assert response.status_code == 200, response.content
    assert response.json()["source"] == published.source
    assert Download.objects.get().user == bob
    assert [(type(e), e.component_id, e.user_id) for e in events.published] == [
        (ComponentDownloaded, published.pk, bob.pk)
    ]


def test_download_is_recorded_without_a_user_when_anonymous(client, published, events):
    with events.committing():
        response = client.post(f"{API}/components/{published.slug}/download")

    assert response.status_code == 200
    assert Download.objects.get().user is None
    assert [(type(e), e.user_id) for e in events.published] == [(ComponentDownloaded, None)]


def test_download_is_404_and_records_nothing_for_a_pending_component(client, alice, alice_key, events):
    pending = ComponentFactory(author=AuthorFactory(user=alice))

    with events.committing():
        assert_error(
            client.post(f"{API}/components/{pending.slug}/download", headers=bearer(alice_key)), 404, "not_found"
        )
    assert not Download.objects.exists()
    assert events.published == []


def test_download_is_401_when_the_token_is_wrong(client, published):
    response = client.post(f"{API}/components/{published.slug}/download", headers=bearer("not-a-key"))

    assert_error(response, 401, "unauthorized")
    assert not Download.objects.exists()


# --- authors -------------------------------------------------------------------------------


def test_author_profile_shows_reputation_and_published_components(client, alice, published):
    author = published.author
    author.reputation = "4.50"
    author.save()
    ComponentFactory(author=author)  # pending: not counted

    response = client.get(f"{API}/authors/alice")

    assert response.status_code == 200
    body = response.json()
    assert (body["username"], body["reputation"], body["published_components"]) == ("alice", 4.5, 1)


def test_author_profile_is_404_when_the_user_has_no_author_profile(client, bob):
    assert_error(client.get(f"{API}/authors/bob"), 404, "not_found")


def test_author_profile_is_422_when_the_username_has_invalid_characters(client):
    assert_error(client.get(f"{API}/authors/a%20b"), 422, "invalid")


# --- the caller's components and notifications --------------------------------------------------


def test_my_components_lists_the_callers_components_in_every_status(client, alice, bob, alice_key):
    author = AuthorFactory(user=alice)
    pending = ComponentFactory(author=author)
    rejected = ComponentFactory(author=author, status=Component.Status.REJECTED, rejection_reason="no front matter")
    ComponentFactory(author=AuthorFactory(user=bob))

    body = client.get(f"{API}/me/components", headers=bearer(alice_key)).json()
    only_rejected = client.get(f"{API}/me/components", {"status": "rejected"}, headers=bearer(alice_key)).json()

    assert {c["slug"] for c in body["items"]} == {pending.slug, rejected.slug}
    assert [(c["slug"], c["rejection_reason"]) for c in only_rejected["items"]] == [(rejected.slug, "no front matter")]


def test_my_components_is_401_without_a_token(client):
    assert_error(client.get(f"{API}/me/components"), 401, "unauthorized")


def test_my_notifications_lists_only_the_callers_and_filters_unread(client, alice, bob, alice_key):
    read = NotificationFactory(user=alice, read_at=timezone.now())
    unread = NotificationFactory(user=alice)
    NotificationFactory(user=bob)

    everything = client.get(f"{API}/me/notifications", headers=bearer(alice_key)).json()
    unread_only = client.get(f"{API}/me/notifications", {"unread": "true"}, headers=bearer(alice_key)).json()

    assert {n["id"] for n in everything["items"]} == {read.pk, unread.pk}
    assert [n["id"] for n in unread_only["items"]] == [unread.pk]


def test_mark_read_marks_the_given_notifications_and_ignores_other_users_ids(client, alice, bob, alice_key):
    first, second = NotificationFactory(user=alice), NotificationFactory(user=alice)
    others = NotificationFactory(user=bob)

    response = client.post(
        f"{API}/me/notifications/read",
        {"ids": [first.pk, others.pk]},
        content_type="application/json",
        headers=bearer(alice_key),
    )

    assert response.json() == {"marked": 1}
    assert set(Notification.objects.filter(read_at__isnull=False).values_list("pk", flat=True)) == {first.pk}
    second.refresh_from_db()
    assert second.read_at is None


def test_mark_read_with_all_marks_all_of_the_callers_notifications(client, alice, bob, alice_key):
    NotificationFactory(user=alice), NotificationFactory(user=alice)
    others = NotificationFactory(user=bob)

    response = client.post(
        f"{API}/me/notifications/read", {"all": True}, content_type="application/json", headers=bearer(alice_key)
    )

    assert response.json() == {"marked": 2}
    others.refresh_from_db()
    assert others.read_at is None


@pytest.mark.parametrize(
    "body",
    [
        {"ids": [0]},
        {"ids": ["x"]},
        {"ids": [2**63]},
        {"ids": "1"},
        {"ids": []},
        {"ids": None},
        {},
        {"idz": [1]},
        {"ids": [1], "all": True},
        {"all": False},
        {"all": 0, "ids": [1]},
        [None, None],
        '"x"',  # a JSON string, sent as is
        None,  # no body at all
    ],
)
def test_mark_read_is_422_and_marks_nothing_when_the_body_is_invalid(client, alice, alice_key, body):
    unread = NotificationFactory(user=alice)

    response = client.post(
        f"{API}/me/notifications/read", body, content_type="application/json", headers=bearer(alice_key)
    )

    assert_error(response, 422, "invalid")
    unread.refresh_from_db()
    assert unread.read_at is None


def test_my_notifications_and_mark_read_are_401_without_a_token(client):
    assert_error(client.get(f"{API}/me/notifications"), 401, "unauthorized")
    assert_error(client.post(f"{API}/me/notifications/read", {}, content_type="application/json"), 401, "unauthorized")


# --- the document ----------------------------------------------------------------------------


def test_openapi_document_lists_every_endpoint_with_bearer_security(client):
    schema = client.get(f"{API}/openapi.json").json()

    assert set(schema["paths"]) == {
        f"{API}/components",
        f"{API}/components/{{slug}}",
        f"{API}/components/{{slug}}/versions",
        f"{API}/components/{{slug}}/rating",
        f"{API}/components/{{slug}}/download",
        f"{API}/authors/{{username}}",
        f"{API}/me/components",
        f"{API}/me/notifications",
        f"{API}/me/notifications/read",
    }
    assert schema["components"]["securitySchemes"]["TokenAuth"] == {"type": "http", "scheme": "bearer"}
    assert schema["paths"][f"{API}/components"]["get"]["security"] == [{"TokenAuth": []}, {}]
    upload = schema["paths"][f"{API}/components"]["post"]
    assert upload["security"] == [{"TokenAuth": []}]
    assert {"201", "401", "413", "422", "429"} <= set(upload["responses"])


def test_docs_page_is_served(client):
    assert client.get(f"{API}/docs").status_code == 200
