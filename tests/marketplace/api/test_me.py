"""``/me``: the caller's components in every status, notifications, and marking them read."""

from __future__ import annotations

import pytest
from django.utils import timezone

from marketplace.models import Component, Notification
from tests.marketplace.factories import AuthorFactory, ComponentFactory, NotificationFactory
from tests.support.api import API, assert_error, bearer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_rate_limit_cache")]


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
