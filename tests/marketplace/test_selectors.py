"""Marketplace selectors: which components, authors and notifications each read returns."""

from datetime import timedelta

import pytest
from django.utils import timezone

from marketplace import selectors
from marketplace.errors import NotFound
from marketplace.models import Component
from tests.marketplace.factories import (
    AuthorFactory,
    ComponentFactory,
    NotificationFactory,
    PublishedComponentFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def test_component_list_gives_published_components_newest_first_when_no_status_is_given():
    older = PublishedComponentFactory()
    newer = PublishedComponentFactory()
    Component.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(days=1))
    ComponentFactory()  # pending

    assert list(selectors.component_list()) == [newer, older]


def test_component_list_gives_only_that_users_components_when_user_id_is_given():
    author = AuthorFactory()
    own_pending = ComponentFactory(author=author)
    own_published = PublishedComponentFactory(author=author)
    PublishedComponentFactory()

    assert set(selectors.component_list(status=None, user_id=author.user_id)) == {own_pending, own_published}
    assert list(selectors.component_list(user_id=author.user_id)) == [own_published]


def test_component_list_visible_gives_only_the_callers_own_when_status_is_not_published():
    author = AuthorFactory()
    own = ComponentFactory(author=author)
    ComponentFactory()  # someone else's pending

    assert list(selectors.component_list_visible(user_id=author.user_id, status=Component.Status.PENDING)) == [own]
    assert list(selectors.component_list_visible(user_id=None, status=Component.Status.PENDING)) == []


def test_component_list_visible_filters_by_author_username():
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    alices = PublishedComponentFactory(author=AuthorFactory(user=alice))
    PublishedComponentFactory(author=AuthorFactory(user=bob))

    assert list(selectors.component_list_visible(user_id=None, author="alice")) == [alices]


def test_component_get_visible_gives_a_pending_component_to_its_author_only():
    component = ComponentFactory()

    assert selectors.component_get_visible(slug=component.slug, user_id=component.author.user_id) == component
    with pytest.raises(NotFound):
        selectors.component_get_visible(slug=component.slug, user_id=UserFactory().pk)
    with pytest.raises(NotFound):
        selectors.component_get_visible(slug=component.slug, user_id=None)


def test_author_profile_get_counts_only_published_components():
    author = AuthorFactory(user=UserFactory(username="ada"))
    PublishedComponentFactory.create_batch(2, author=author)
    ComponentFactory(author=author)

    assert selectors.author_profile_get(username="ada").published_count == 2


def test_author_profile_get_raises_not_found_when_the_user_has_no_profile():
    UserFactory(username="ada")

    with pytest.raises(NotFound):
        selectors.author_profile_get(username="ada")


def test_notification_list_gives_the_users_notifications_and_only_unread_ones_when_asked():
    user = UserFactory()
    read = NotificationFactory(user=user, read_at=timezone.now())
    unread = NotificationFactory(user=user)
    NotificationFactory()  # someone else's

    assert set(selectors.notification_list(user_id=user.pk)) == {read, unread}
    assert list(selectors.notification_list(user_id=user.pk, unread_only=True)) == [unread]
