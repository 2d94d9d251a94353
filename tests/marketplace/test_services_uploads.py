"""Marketplace services: what each writes and which events it registers (no worker process)."""

import dataclasses
import hashlib
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from marketplace import services
from marketplace.errors import Conflict, NotFound, ValidationFailed
from marketplace.events import (
    ComponentDownloaded,
    ComponentPublished,
    ComponentRated,
    ComponentRejected,
    ComponentUploaded,
    NotificationRequested,
)
from marketplace.models import ApiToken, Author, Component, Download, Notification, Rating
from marketplace.selectors import search_components
from tasks.bus import TestBroker, override_message_broker
from tasks.models import Outbox
from tests.marketplace.factories import (
    AuthorFactory,
    ComponentFactory,
    DownloadFactory,
    NotificationFactory,
    PublishedComponentFactory,
    UserFactory,
)

SOURCE = """---
name: Fancy Button
version: 2.1.0
description: A button that sparkles when pressed.
tags: [ui, button]
---
export const Button = () => null;
"""
INVALID_SOURCE = "---\nname: Broken\n---\nx"
BASE_FIELDS = {"message_id", "occurred_at"}


def source_digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def facts(messages) -> list[tuple[type, dict]]:
    """Each message as (type, its own fields): what a test can predict."""
    return [(type(m), {k: v for k, v in dataclasses.asdict(m).items() if k not in BASE_FIELDS}) for m in messages]


pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("null_broker")]


# --- author_get_or_create -------------------------------------------------------------------


def test_author_profile_is_created_once_when_asked_twice():
    user = UserFactory(username="ada")

    first = services.author_get_or_create(user=user)
    second = services.author_get_or_create(user=user)

    assert first.pk == second.pk
    assert first.display_name == "ada"
    assert Author.objects.filter(user=user).count() == 1


# --- component_upload -------------------------------------------------------------------------


def test_upload_registers_component_uploaded_after_commit(null_broker, committed):
    author = AuthorFactory()

    with committed():
        component = services.component_upload(author=author, name="Fancy Button", source=SOURCE)
        assert null_broker.published == []  # nothing before commit

    assert facts(null_broker.published) == [(ComponentUploaded, {"component_id": component.pk, "author_id": author.pk})]
    assert Outbox.objects.get().sent_at is not None


def test_upload_creates_a_pending_component_with_a_slug():
    author = AuthorFactory()

    component = services.component_upload(author=author, name="  Fancy Button  ", source=SOURCE)

    stored = Component.objects.get(pk=component.pk)
    assert stored.author == author
    assert stored.name == "Fancy Button"
    assert stored.slug == "fancy-button"
    assert stored.source == SOURCE
    assert stored.status == Component.Status.PENDING
    assert stored.version == ""
    assert stored.metadata == {}


def test_upload_gives_distinct_slugs_when_names_are_the_same():
    author = AuthorFactory()

    slugs = [services.component_upload(author=author, name="Fancy Button", source=SOURCE).slug for _ in range(3)]

    assert slugs == ["fancy-button", "fancy-button-2", "fancy-button-3"]


def test_upload_gets_a_slug_when_name_has_no_slug_characters():
    component = services.component_upload(author=AuthorFactory(), name="!!!", source=SOURCE)

    assert component.slug == "component"


def test_upload_registers_nothing_when_transaction_rolls_back(null_broker, committed):
    author = AuthorFactory()

    with committed(), pytest.raises(RuntimeError), transaction.atomic():
        services.component_upload(author=author, name="Fancy Button", source=SOURCE)
        raise RuntimeError("the caller fails after the upload")

    assert null_broker.published == []
    assert not Component.objects.exists()
    assert not Outbox.objects.exists()


@pytest.mark.parametrize(
    ("name", "source", "reason"),
    [
        ("", SOURCE, "A component needs a name."),
        ("   ", SOURCE, "A component needs a name."),
        ("Fancy Button", "", "The source is empty."),
        ("Fancy Button", " \n\t ", "The source is empty."),
        ("Fancy Button", SOURCE + "x" * services.MAX_SOURCE_BYTES, "The source is larger than 256 KiB."),
    ],
    ids=["empty-name", "blank-name", "empty-source", "blank-source", "oversized-source"],
)
def test_upload_is_refused_and_nothing_happens_when_input_is_invalid(null_broker, committed, name, source, reason):
    with committed(), pytest.raises(ValidationFailed) as info:
        services.component_upload(author=AuthorFactory(), name=name, source=source)

    assert info.value.message == reason
    assert not Component.objects.exists()
    assert not Outbox.objects.exists()
    assert null_broker.published == []


def test_upload_size_limit_counts_bytes_not_characters():
    # 2 bytes per character: within the limit in characters, over it in bytes.
    source = SOURCE + "é" * (services.MAX_SOURCE_BYTES // 2)

    with pytest.raises(ValidationFailed):
        services.component_upload(author=AuthorFactory(), name="Wide", source=source)


def test_upload_is_accepted_when_source_is_exactly_at_the_limit():
    source = SOURCE + "x" * (services.MAX_SOURCE_BYTES - len(SOURCE.encode()))

    component = services.component_upload(author=AuthorFactory(), name="Big", source=source)

    assert len(Component.objects.get(pk=component.pk).source.encode()) == services.MAX_SOURCE_BYTES


def test_upload_is_refused_when_name_is_longer_than_the_column():
    with pytest.raises(ValidationFailed):
        services.component_upload(author=AuthorFactory(), name="x" * 201, source=SOURCE)
    assert not Component.objects.exists()


# --- component_new_version ------------------------------------------------------------------


def test_new_version_puts_component_back_to_pending_and_registers_an_upload(null_broker, committed):
    component = ComponentFactory(
        status=Component.Status.REJECTED, rejection_reason="Missing required front matter field(s): version."
    )

    with committed():
        services.component_new_version(component=component, source=SOURCE)

    stored = Component.objects.get(pk=component.pk)
    assert stored.status == Component.Status.PENDING
    assert stored.source == SOURCE
    assert stored.rejection_reason == ""
    assert facts(null_broker.published) == [
        (ComponentUploaded, {"component_id": component.pk, "author_id": component.author_id})
    ]


@pytest.mark.parametrize("source", ["", "x" * (services.MAX_SOURCE_BYTES + 1)], ids=["empty", "oversized"])
def test_new_version_is_refused_and_nothing_changes_when_source_is_invalid(null_broker, committed, source):
    component = PublishedComponentFactory()
    before = Component.objects.get(pk=component.pk)

    with committed(), pytest.raises(ValidationFailed):
        services.component_new_version(component=component, source=source)

    after = Component.objects.get(pk=component.pk)
    assert (after.status, after.source, after.updated_at) == (before.status, before.source, before.updated_at)
    assert null_broker.published == []
    assert not Outbox.objects.exists()


# --- component_process_upload ---------------------------------------------------------------


def test_processing_publishes_component_when_source_is_valid(null_broker, committed):
    author = AuthorFactory()
    component = ComponentFactory(author=author, name="Fancy Button", source=SOURCE)

    with committed():
        result = services.component_process_upload(component_id=component.pk)

    stored = Component.objects.get(pk=component.pk)
    assert result.pk == component.pk
    assert stored.status == Component.Status.PUBLISHED
    assert stored.version == "2.1.0"
    assert stored.description == "A button that sparkles when pressed."
    assert stored.metadata == {
        "name": "Fancy Button",
        "version": "2.1.0",
        "description": "A button that sparkles when pressed.",
        "tags": ["ui", "button"],
    }
    assert stored.rejection_reason == ""
    assert facts(null_broker.published) == [
        (ComponentPublished, {"component_id": component.pk, "author_id": author.pk, "version": "2.1.0"}),
        (
            NotificationRequested,
            {
                "user_id": author.user_id,
                "subject": "Fancy Button 2.1.0 is published",
                "body": "Your component passed the checks and is now listed.",
                "idempotency_key": f"published-{component.pk}-{source_digest(SOURCE)}",
            },
        ),
    ]


def test_processing_rejects_component_with_the_reason_when_source_is_invalid(null_broker, committed):
    author = AuthorFactory()
    component = ComponentFactory(author=author, name="Broken", source=INVALID_SOURCE)
    reason = "Missing required front matter field(s): version, description."

    with committed():
        services.component_process_upload(component_id=component.pk)

    stored = Component.objects.get(pk=component.pk)
    assert stored.status == Component.Status.REJECTED
    assert stored.rejection_reason == reason
    assert stored.version == ""
    assert facts(null_broker.published) == [
        (ComponentRejected, {"component_id": component.pk, "author_id": author.pk, "reason": reason}),
        (
            NotificationRequested,
            {
                "user_id": author.user_id,
                "subject": "Broken was rejected",
                "body": reason,
                "idempotency_key": f"rejected-{component.pk}-{source_digest(INVALID_SOURCE)}",
            },
        ),
    ]


@pytest.mark.parametrize("source", [SOURCE, INVALID_SOURCE], ids=["published", "rejected"])
def test_processing_again_registers_nothing_and_changes_nothing_when_not_pending(null_broker, committed, source):
    component = ComponentFactory(source=source)
    services.component_process_upload(component_id=component.pk)
    before = Component.objects.get(pk=component.pk)
    outbox_rows = Outbox.objects.count()

    with committed():
        result = services.component_process_upload(component_id=component.pk)

    after = Component.objects.get(pk=component.pk)
    assert result.pk == component.pk
    assert null_broker.published == []
    assert Outbox.objects.count() == outbox_rows
    assert (after.status, after.rejection_reason, after.metadata, after.version, after.updated_at) == (
        before.status,
        before.rejection_reason,
        before.metadata,
        before.version,
        before.updated_at,
    )


def test_processing_returns_none_when_component_does_not_exist(null_broker, committed):
    with committed():
        assert services.component_process_upload(component_id=987654) is None

    assert null_broker.published == []


def test_processing_uses_the_new_source_when_a_new_version_was_uploaded():
    component = ComponentFactory(source=INVALID_SOURCE)
    services.component_process_upload(component_id=component.pk)
    services.component_new_version(component=Component.objects.get(pk=component.pk), source=SOURCE)

    services.component_process_upload(component_id=component.pk)

    stored = Component.objects.get(pk=component.pk)
    assert stored.status == Component.Status.PUBLISHED
    assert stored.version == "2.1.0"
    assert stored.rejection_reason == ""


# --- component_rate -------------------------------------------------------------------------


@pytest.mark.parametrize("score", [0, 6, -1, True, False, "4", 4.0, None], ids=repr)
def test_rating_is_refused_when_score_is_not_a_whole_number_from_1_to_5(null_broker, committed, score):
    component = PublishedComponentFactory()

    with committed(), pytest.raises(ValidationFailed) as info:
        services.component_rate(component=component, user=UserFactory(), score=score)

    assert info.value.message == "A rating must be a whole number from 1 to 5."
    assert not Rating.objects.exists()
    assert null_broker.published == []


@pytest.mark.parametrize("status", [Component.Status.PENDING, Component.Status.REJECTED])
def test_rating_is_refused_when_component_is_not_published(null_broker, committed, status):
    component = ComponentFactory(status=status)

    with committed(), pytest.raises(Conflict):
        services.component_rate(component=component, user=UserFactory(), score=5)

    assert not Rating.objects.exists()
    assert null_broker.published == []


def test_rating_is_refused_when_component_was_unpublished_after_it_was_loaded():
    component = PublishedComponentFactory()
    services.component_new_version(component=Component.objects.get(pk=component.pk), source=SOURCE)

    with pytest.raises(Conflict):
        services.component_rate(component=component, user=UserFactory(), score=5)
    assert not Rating.objects.exists()


def test_rating_registers_component_rated_and_stores_the_score(null_broker, committed):
    component, user = PublishedComponentFactory(), UserFactory()

    with committed():
        rating = services.component_rate(component=component, user=user, score=4)

    assert Rating.objects.get() == rating
    assert (rating.score, rating.user_id, rating.component_id) == (4, user.pk, component.pk)
    assert facts(null_broker.published) == [
        (
            ComponentRated,
            {"component_id": component.pk, "author_id": component.author_id, "user_id": user.pk, "score": 4},
        )
    ]


def test_second_rating_by_the_same_user_updates_the_first():
    component, user = PublishedComponentFactory(), UserFactory()
    first = services.component_rate(component=component, user=user, score=2)

    second = services.component_rate(component=component, user=user, score=5)

    assert second.pk == first.pk
    assert list(Rating.objects.values_list("score", flat=True)) == [5]
    stored = Component.objects.get(pk=component.pk)
    assert (stored.rating_average, stored.rating_count) == (Decimal("5.00"), 1)


def test_rating_keeps_average_and_count_exact():
    component = PublishedComponentFactory()
    users = UserFactory.create_batch(3)

    for user, score in zip(users, [5, 4, 4], strict=True):
        services.component_rate(component=component, user=user, score=score)
    stored = Component.objects.get(pk=component.pk)
    assert (stored.rating_average, stored.rating_count) == (Decimal("4.33"), 3)

    services.component_rate(component=component, user=users[0], score=1)
    stored = Component.objects.get(pk=component.pk)
    assert (stored.rating_average, stored.rating_count) == (Decimal("3.00"), 3)


def test_rating_average_counts_only_this_components_ratings():
    component, other = PublishedComponentFactory(), PublishedComponentFactory()
    services.component_rate(component=other, user=UserFactory(), score=1)

    services.component_rate(component=component, user=UserFactory(), score=5)

    assert Component.objects.get(pk=component.pk).rating_average == Decimal("5.00")
    assert Component.objects.get(pk=other.pk).rating_average == Decimal("1.00")


# --- component_download and download counts ------------------------------------------------


@pytest.mark.parametrize("anonymous", [False, True], ids=["user", "anonymous"])
def test_download_records_a_row_and_registers_component_downloaded(null_broker, committed, anonymous):
    component = PublishedComponentFactory()
    user = None if anonymous else UserFactory()

    with committed():
        download = services.component_download(component=component, user=user)

    assert Download.objects.get() == download
    assert download.user_id == (None if anonymous else user.pk)
    assert facts(null_broker.published) == [
        (ComponentDownloaded, {"component_id": component.pk, "user_id": None if anonymous else user.pk})
    ]


@pytest.mark.parametrize("status", [Component.Status.PENDING, Component.Status.REJECTED])
def test_download_is_refused_when_component_is_not_published(null_broker, committed, status):
    component = ComponentFactory(status=status)

    with committed(), pytest.raises(NotFound):
        services.component_download(component=component, user=UserFactory())

    assert not Download.objects.exists()
    assert null_broker.published == []


def test_download_count_refresh_counts_the_rows_of_the_component():
    component, other = PublishedComponentFactory(download_count=99), PublishedComponentFactory()
    DownloadFactory.create_batch(3, component=component)
    DownloadFactory(component=component, user=None)
    DownloadFactory(component=other)

    count = services.component_download_count_refresh(component_id=component.pk)

    assert count == 4
    assert Component.objects.get(pk=component.pk).download_count == 4
    assert Component.objects.get(pk=other.pk).download_count == 0


def test_download_count_refresh_gives_zero_when_there_are_no_downloads():
    component = PublishedComponentFactory(download_count=5)

    assert services.component_download_count_refresh(component_id=component.pk) == 0
    assert Component.objects.get(pk=component.pk).download_count == 0


# --- author_reputation_recalculate ----------------------------------------------------------


def _rate(component, *scores):
    for score in scores:
        services.component_rate(component=component, user=UserFactory(), score=score)


def test_reputation_is_the_average_over_ratings_of_published_components():
    author = AuthorFactory()
    first, second = PublishedComponentFactory.create_batch(2, author=author)
    _rate(first, 5, 4)
    _rate(second, 3)
    ComponentFactory(author=author, status=Component.Status.REJECTED, rating_average=Decimal("1.00"), rating_count=9)
    _rate(PublishedComponentFactory(), 1)  # someone else's

    reputation = services.author_reputation_recalculate(author_id=author.pk)

    assert reputation == Decimal("4.00")
    assert Author.objects.get(pk=author.pk).reputation == Decimal("4.00")


def test_reputation_is_zero_when_author_has_no_ratings():
    author = AuthorFactory(reputation=Decimal("3.50"))
    PublishedComponentFactory(author=author)

    assert services.author_reputation_recalculate(author_id=author.pk) == Decimal(0)
    assert Author.objects.get(pk=author.pk).reputation == Decimal(0)


def test_reputation_is_exact_when_averages_of_components_were_rounded():
    author = AuthorFactory()
    one, six = PublishedComponentFactory.create_batch(2, author=author)
    _rate(one, 1)
    _rate(six, 5, 5, 5, 5, 4, 4)  # 28/6 = 4.666..., stored as 4.67

    assert services.author_reputation_recalculate(author_id=author.pk) == Decimal("4.14")  # 29/7


# --- notifications --------------------------------------------------------------------------


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


# --- api_token_issue ------------------------------------------------------------------------


def test_issued_api_key_is_stored_only_as_its_hash():
    user = UserFactory()

    token, key = services.api_token_issue(user=user, name="ci")

    stored = ApiToken.objects.get(key_hash=ApiToken.hash_key(key))
    assert stored.pk == token.pk
    assert (stored.user_id, stored.name) == (user.pk, "ci")
    assert len(key) >= 32
    assert stored.key_prefix == key[: ApiToken.KEY_PREFIX_LENGTH]
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert not any(key in str(value) for value in row.values())
    assert key not in str(stored)
    assert not any(key in str(value) for value in vars(token).values())
    assert stored.is_active
    assert timedelta(days=89) < stored.expires_at - timezone.now() <= timedelta(days=90)


def test_issued_api_keys_differ_each_time():
    user = UserFactory()

    keys = {services.api_token_issue(user=user)[1] for _ in range(3)}

    assert len(keys) == 3
    assert ApiToken.objects.filter(user=user).count() == 3


# --- the whole chain through a TestBroker ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_upload_is_published_indexed_and_notified_in_process_when_messages_are_processed(mailoutbox):
    author = AuthorFactory()
    broker = TestBroker()

    with override_message_broker(broker):
        component = services.component_upload(author=author, name="Fancy Button", source=SOURCE)
        assert Component.objects.get(pk=component.pk).status == Component.Status.PENDING
        ran = broker.process_messages()

    stored = Component.objects.get(pk=component.pk)
    assert stored.status == Component.Status.PUBLISHED
    assert stored.indexed_at is not None
    assert list(search_components("sparkles")) == [stored]
    notification = Notification.objects.get(user=author.user)
    assert notification.subject == "Fancy Button 2.1.0 is published"
    assert [m.subject for m in mailoutbox] == ["Fancy Button 2.1.0 is published"]
    assert [type(m) for m in broker.published] == [ComponentUploaded, ComponentPublished, NotificationRequested]
    assert ran == 3  # process the upload, index it, send the notification
    assert broker.pending == []
    assert not Outbox.objects.filter(sent_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_invalid_upload_is_rejected_and_the_author_told_why_when_messages_are_processed(mailoutbox):
    author = AuthorFactory()
    broker = TestBroker()

    with override_message_broker(broker):
        component = services.component_upload(author=author, name="Broken", source=INVALID_SOURCE)
        broker.process_messages()

    stored = Component.objects.get(pk=component.pk)
    assert stored.status == Component.Status.REJECTED
    assert stored.search_document is None
    assert list(search_components("broken")) == []
    notification = Notification.objects.get(user=author.user)
    assert notification.body == "Missing required front matter field(s): version, description."
    assert len(mailoutbox) == 1


@pytest.mark.django_db(transaction=True)
def test_author_is_told_again_when_a_new_version_is_rejected_for_another_reason(mailoutbox):
    author = AuthorFactory()
    broker = TestBroker()
    with override_message_broker(broker):
        component = services.component_upload(author=author, name="Broken", source=INVALID_SOURCE)
        broker.process_messages()
        services.component_new_version(
            component=Component.objects.get(pk=component.pk), source="---\nname: [unclosed\n---\n"
        )
        broker.process_messages()

    assert Component.objects.get(pk=component.pk).rejection_reason.startswith("The YAML front matter is not valid")
    bodies = list(Notification.objects.filter(user=author.user).order_by("pk").values_list("body", flat=True))
    assert len(bodies) == 2
    assert bodies[1].startswith("The YAML front matter is not valid")
    assert len(mailoutbox) == 2
