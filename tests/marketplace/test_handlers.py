"""Marketplace handlers: the wiring (which handler, which queue, which predicate) and what each does."""

import io
from decimal import Decimal

import pytest
from django.core.management import call_command

from marketplace import events, handlers
from marketplace.models import Author, Component, Notification
from marketplace.selectors import search_components
from marketplace.services import component_rate
from tasks.bus import MemoryBroker, TestBroker, get_message_broker, override_message_broker
from tasks.queues import DEFAULT, HIGH_PRIORITY, LOW_PRIORITY
from tests.marketplace.factories import (
    AuthorFactory,
    ComponentFactory,
    DownloadFactory,
    PublishedComponentFactory,
    RatingFactory,
    UserFactory,
)

SOURCE = """---
name: Fancy Button
version: 2.1.0
description: A button that sparkles when pressed.
---
"""

# (message type, handler, queue, predicate): the wiring handlers.register() must make.
EXPECTED = {
    (events.ComponentUploaded, handlers.process_component_upload, HIGH_PRIORITY, None),
    (events.ComponentPublished, handlers.update_search_index, LOW_PRIORITY, None),
    (events.ComponentRejected, handlers.update_search_index, LOW_PRIORITY, None),
    (events.ComponentDeleted, handlers.recalculate_reputation, LOW_PRIORITY, None),
    (events.ComponentRated, handlers.recalculate_reputation, LOW_PRIORITY, None),
    (events.ComponentRated, handlers.notify_author_of_top_rating, DEFAULT, handlers.is_top_rating),
    (events.ComponentDownloaded, handlers.update_download_stats, LOW_PRIORITY, None),
    (events.NotificationRequested, handlers.send_notification, DEFAULT, None),
}


def wiring(broker) -> list[tuple]:
    return [(s.message_type, s.handler, s.queue_name, s.predicate) for s in broker.subscriptions()]


def rated(component: Component, user, score: int) -> events.ComponentRated:
    return events.ComponentRated(component_id=component.pk, author_id=component.author_id, user_id=user.pk, score=score)


# --- wiring ---------------------------------------------------------------------------------


def test_register_subscribes_every_handler_async_on_its_queue():
    broker = TestBroker(copy_subscriptions=False)

    handlers.register(broker)

    assert set(wiring(broker)) == EXPECTED
    assert len(broker.subscriptions()) == len(EXPECTED)
    assert all(s.is_async for s in broker.subscriptions())


def test_register_changes_nothing_when_called_twice():
    broker = TestBroker(copy_subscriptions=False)
    handlers.register(broker)
    first = wiring(broker)

    handlers.register(broker)

    assert wiring(broker) == first


def test_default_broker_is_wired_at_start_up():
    assert isinstance(get_message_broker(), MemoryBroker)  # no override in force
    assert set(wiring(get_message_broker())) >= EXPECTED
    assert set(wiring(TestBroker())) >= EXPECTED


@pytest.mark.parametrize(("score", "is_top"), [(5, True), (4, False), (3, False), (1, False)])
def test_top_rating_predicate_is_true_only_for_five_stars(score, is_top):
    assert handlers.is_top_rating(events.ComponentRated(component_id=1, author_id=2, user_id=3, score=score)) is is_top


def test_list_subscriptions_shows_every_marketplace_handler_with_its_queue():
    out = io.StringIO()

    call_command("list_subscriptions", stdout=out)

    lines = out.getvalue().splitlines()
    for message_type, handler, queue, predicate in EXPECTED:
        path = f"{handler.__module__}.{handler.__qualname__}"
        matching = [line for line in lines if line.split()[0] == message_type.message_name and path in line]
        assert len(matching) == 1, (message_type.message_name, path, lines)
        assert f"async queue={queue} " in matching[0]
        assert matching[0].endswith("(with predicate)") is (predicate is not None)


# --- each handler calls its service ---------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("null_broker")
class TestHandlersCallTheirServices:
    def test_process_component_upload_publishes_a_valid_upload(self):
        component = ComponentFactory(source=SOURCE)

        handlers.process_component_upload(
            events.ComponentUploaded(component_id=component.pk, author_id=component.author_id)
        )

        stored = Component.objects.get(pk=component.pk)
        assert (stored.status, stored.version) == (Component.Status.PUBLISHED, "2.1.0")

    def test_process_component_upload_rejects_an_invalid_upload(self):
        component = ComponentFactory(source="no front matter")

        handlers.process_component_upload(
            events.ComponentUploaded(component_id=component.pk, author_id=component.author_id)
        )

        stored = Component.objects.get(pk=component.pk)
        assert stored.status == Component.Status.REJECTED
        assert "must start with a YAML front matter block" in stored.rejection_reason

    def test_update_search_index_makes_a_published_component_searchable(self):
        component = PublishedComponentFactory(description="sparkling widgets")

        handlers.update_search_index(
            events.ComponentPublished(component_id=component.pk, author_id=component.author_id, version="1.0.0")
        )

        assert [c.pk for c in search_components("sparkling")] == [component.pk]

    def test_update_search_index_removes_a_rejected_component(self):
        component = PublishedComponentFactory(description="sparkling widgets")
        handlers.update_search_index(
            events.ComponentPublished(component_id=component.pk, author_id=component.author_id, version="1.0.0")
        )
        Component.objects.filter(pk=component.pk).update(status=Component.Status.REJECTED)

        handlers.update_search_index(
            events.ComponentRejected(component_id=component.pk, author_id=component.author_id, reason="bad")
        )

        assert Component.objects.get(pk=component.pk).search_document is None

    def test_recalculate_reputation_sets_the_authors_reputation_when_rated(self):
        component = PublishedComponentFactory()
        for score in (5, 2):
            component_rate(component=component, user=UserFactory(), score=score)

        handlers.recalculate_reputation(rated(component, UserFactory(), 2))

        assert Author.objects.get(pk=component.author_id).reputation == Decimal("3.50")

    def test_recalculate_reputation_forgets_a_deleted_component(self):
        author = AuthorFactory(reputation=Decimal("5.00"))
        RatingFactory(component=PublishedComponentFactory(author=author), score=2)
        gone = PublishedComponentFactory(author=author)
        RatingFactory.create_batch(3, component=gone, score=5)
        gone_pk = gone.pk
        gone.delete()

        handlers.recalculate_reputation(events.ComponentDeleted(component_id=gone_pk, author_id=author.pk))

        assert Author.objects.get(pk=author.pk).reputation == Decimal("2.00")

    def test_update_download_stats_sets_the_counter_from_the_downloads(self):
        component = PublishedComponentFactory()
        DownloadFactory.create_batch(3, component=component)

        handlers.update_download_stats(events.ComponentDownloaded(component_id=component.pk, user_id=None))

        assert Component.objects.get(pk=component.pk).download_count == 3

    def test_send_notification_stores_and_emails_once(self, mailoutbox):
        user = UserFactory()
        event = events.NotificationRequested(user_id=user.pk, subject="Hi", body="There", idempotency_key="k-1")

        handlers.send_notification(event)
        handlers.send_notification(event)

        assert list(Notification.objects.values_list("user_id", "subject", "body")) == [(user.pk, "Hi", "There")]
        assert len(mailoutbox) == 1

    def test_notify_author_of_top_rating_tells_the_author(self, mailoutbox):
        component, rater = PublishedComponentFactory(name="Fancy Button"), UserFactory()

        handlers.notify_author_of_top_rating(rated(component, rater, 5))

        notification = Notification.objects.get()
        assert notification.user_id == component.author.user_id
        assert notification.subject == "Fancy Button got a 5-star rating"
        assert len(mailoutbox) == 1

    def test_notify_author_of_top_rating_skips_a_self_rating(self, mailoutbox):
        component = PublishedComponentFactory()

        handlers.notify_author_of_top_rating(rated(component, component.author.user, 5))

        assert not Notification.objects.exists()
        assert mailoutbox == []


# --- through a TestBroker with the real wiring ---------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("score", "waiting"), [(5, 2), (4, 1)])
def test_rating_queues_the_top_rating_handler_only_when_five_stars(
    django_capture_on_commit_callbacks, mailoutbox, score, waiting
):
    component, rater = PublishedComponentFactory(), UserFactory()
    RatingFactory(component=component, score=1)  # an earlier rating, not yet counted
    broker = TestBroker()

    with override_message_broker(broker):
        with django_capture_on_commit_callbacks(execute=True):
            component_rate(component=component, user=rater, score=score)
        queued = [s.handler for _, s in broker.pending]
        broker.process_messages()

    assert len(queued) == waiting
    assert handlers.recalculate_reputation in queued
    assert (handlers.notify_author_of_top_rating in queued) is (score == 5)
    assert Author.objects.get(pk=component.author_id).reputation == Decimal(score + 1) / 2
    assert Notification.objects.filter(user=component.author.user).count() == (1 if score == 5 else 0)
    assert len(mailoutbox) == (1 if score == 5 else 0)
