"""Services of notifications: stored and emailed once per key, the top-rating notice to the
author, and marking notifications read."""

from datetime import timedelta

import pytest
from django.utils import timezone

from marketplace import services
from marketplace.models import Notification
from tests.marketplace.factories import (
    NotificationFactory,
    PublishedComponentFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("null_broker")]


def test_notification_is_stored_and_emailed_once_when_sent_twice_with_one_key(mailoutbox):
    user = UserFactory(email="ada@example.com")

    first = services.notification_send(user_id=user.pk, subject="Hello", body="World", idempotency_key="k-1")
    second = services.notification_send(user_id=user.pk, subject="Hello again", body="!", idempotency_key="k-1")

    assert second.pk == first.pk
    stored = Notification.objects.get()
    assert (stored.user_id, stored.subject, stored.body) == (user.pk, "Hello", "World")
    assert stored.emailed_at is not None
    assert len(mailoutbox) == 1
    assert (mailoutbox[0].subject, mailoutbox[0].body, mailoutbox[0].to) == ("Hello", "World", ["ada@example.com"])


def test_notifications_with_different_keys_are_each_sent(mailoutbox):
    user = UserFactory()

    services.notification_send(user_id=user.pk, subject="One", body="", idempotency_key="k-1")
    services.notification_send(user_id=user.pk, subject="Two", body="", idempotency_key="k-2")

    assert Notification.objects.count() == 2
    assert [m.subject for m in mailoutbox] == ["One", "Two"]


def test_notification_is_stored_but_not_emailed_when_user_has_no_email(mailoutbox):
    user = UserFactory(email="")

    notification = services.notification_send(user_id=user.pk, subject="Hi", body="", idempotency_key="k-1")

    assert Notification.objects.get() == notification
    assert notification.emailed_at is None
    assert mailoutbox == []


def test_notification_send_returns_none_when_user_is_unknown(mailoutbox):
    assert services.notification_send(user_id=987654, subject="Hi", body="", idempotency_key="k-1") is None
    assert not Notification.objects.exists()
    assert mailoutbox == []


def test_top_rating_notifies_the_author_when_someone_else_rated(mailoutbox):
    component = PublishedComponentFactory(name="Fancy Button")
    rater = UserFactory()

    notification = services.rating_notify_author(
        component_id=component.pk, author_id=component.author_id, rater_id=rater.pk
    )

    assert notification.user_id == component.author.user_id
    assert notification.subject == "Fancy Button got a 5-star rating"
    assert notification.idempotency_key == f"top-rating-{component.pk}-{rater.pk}"
    assert [m.to for m in mailoutbox] == [[component.author.user.email]]


def test_top_rating_notifies_nobody_when_author_rated_their_own_component(mailoutbox):
    component = PublishedComponentFactory()

    result = services.rating_notify_author(
        component_id=component.pk, author_id=component.author_id, rater_id=component.author.user_id
    )

    assert result is None
    assert not Notification.objects.exists()
    assert mailoutbox == []


def test_top_rating_notifies_nobody_when_author_is_gone():
    assert services.rating_notify_author(component_id=1, author_id=987654, rater_id=UserFactory().pk) is None
    assert not Notification.objects.exists()


def test_marking_notifications_read_touches_only_the_given_unread_ones_of_the_user():
    user, other = UserFactory(), UserFactory()
    first, second, third = NotificationFactory.create_batch(3, user=user)
    already_read = NotificationFactory(user=user, read_at=timezone.now() - timedelta(days=1))
    theirs = NotificationFactory(user=other)

    assert services.notifications_mark_read(user_id=user.pk, notification_ids=[first.pk, theirs.pk]) == 1
    assert set(Notification.objects.filter(read_at__isnull=True).values_list("pk", flat=True)) == {
        second.pk,
        third.pk,
        theirs.pk,
    }

    assert services.notifications_mark_read(user_id=user.pk) == 2
    assert services.notifications_mark_read(user_id=user.pk) == 0
    assert Notification.objects.get(pk=theirs.pk).read_at is None
    assert Notification.objects.get(pk=already_read.pk).read_at == already_read.read_at
