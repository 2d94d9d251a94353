"""``PUT /components/{slug}/rating``: scores, their replacement, bad scores, unpublished and
others' pending components, no token, and the ComponentRated event."""

from __future__ import annotations

import pytest

from marketplace.events import ComponentRated
from marketplace.models import Rating
from tests.marketplace.factories import AuthorFactory, ComponentFactory, UserFactory, issue_key
from tests.support.api import API, assert_error, bearer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_rate_limit_cache")]


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


def test_rating_again_replaces_the_users_rating_when_they_change_their_mind(client, published, bob_key):
    rate(client, published.slug, issue_key(UserFactory()), 5)
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


def test_rating_is_403_and_writes_nothing_when_the_author_rates_their_own_component(
    client, published, alice_key, events
):
    with events.committing():
        response = rate(client, published.slug, alice_key, 5)

    assert_error(response, 403, "forbidden")
    assert response.json()["detail"] == "Authors cannot rate their own components."
    assert not Rating.objects.exists()
    assert events.published == []


def test_rating_is_403_when_the_author_rates_their_own_pending_component(client, alice, alice_key):
    own_pending = ComponentFactory(author=AuthorFactory(user=alice))

    assert_error(rate(client, own_pending.slug, alice_key, 4), 403, "forbidden")
    assert not Rating.objects.exists()


def test_rating_is_404_for_another_users_pending_component(client, alice, bob_key):
    pending = ComponentFactory(author=AuthorFactory(user=alice))

    assert_error(rate(client, pending.slug, bob_key, 4), 404, "not_found")


def test_rating_is_401_without_a_token(client, published):
    assert_error(rate(client, published.slug, None, 4), 401, "unauthorized")
    assert not Rating.objects.exists()
