"""``/authors/{username}``: the public profile with reputation and published components."""

from __future__ import annotations

import pytest

from tests.marketplace.factories import ComponentFactory
from tests.support.api import API, assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_rate_limit_cache")]


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
