"""``POST /components/{slug}/download``: the source, the recorded download (with or without a
user), pending components, a wrong token, and the ComponentDownloaded event."""

from __future__ import annotations

import pytest

from marketplace.events import ComponentDownloaded
from marketplace.models import Download
from tests.marketplace.factories import AuthorFactory, ComponentFactory
from tests.support.api import API, assert_error, bearer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_rate_limit_cache")]


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
