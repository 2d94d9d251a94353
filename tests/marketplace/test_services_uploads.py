"""Services of uploads: the author profile, upload, new version and processing, what each writes
and which events it registers, and the whole chain through a TestBroker (no worker process)."""

import hashlib

import pytest
from django.db import transaction

from marketplace import services
from marketplace.errors import ValidationFailed
from marketplace.events import (
    ComponentPublished,
    ComponentRejected,
    ComponentUploaded,
    NotificationRequested,
)
from marketplace.models import Author, Component, Notification
from marketplace.selectors import search_components
from tasks.bus import TestBroker, override_message_broker
from tasks.models import Outbox
from tests.marketplace.factories import (
    FANCY_BUTTON_SOURCE,
    INVALID_SOURCE,
    AuthorFactory,
    ComponentFactory,
    PublishedComponentFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("null_broker")]


def source_digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


# --- author_get_or_create -------------------------------------------------------------------


def test_author_profile_is_created_once_when_asked_twice():
    user = UserFactory(username="ada")

    first = services.author_get_or_create(user=user)
    second = services.author_get_or_create(user=user)

    assert first.pk == second.pk
    assert first.display_name == "ada"
    assert Author.objects.filter(user=user).count() == 1


# --- component_upload -------------------------------------------------------------------------


def test_upload_registers_component_uploaded_after_commit(null_broker, committed, published_facts):
    author = AuthorFactory()

    with committed():
        component = services.component_upload(author=author, name="Fancy Button", source=FANCY_BUTTON_SOURCE)
        assert null_broker.published == []  # nothing before commit

    assert published_facts() == [(ComponentUploaded, {"component_id": component.pk, "author_id": author.pk})]
    assert Outbox.objects.get().sent_at is not None


def test_upload_creates_a_pending_component_with_a_slug():
    author = AuthorFactory()

    component = services.component_upload(author=author, name="  Fancy Button  ", source=FANCY_BUTTON_SOURCE)

    stored = Component.objects.get(pk=component.pk)
    assert stored.author == author
    assert stored.name == "Fancy Button"
    assert stored.slug == "fancy-button"
    assert stored.source == FANCY_BUTTON_SOURCE
    assert stored.status == Component.Status.PENDING
    assert stored.version == ""
    assert stored.metadata == {}


def test_upload_gives_distinct_slugs_when_names_are_the_same():
    author = AuthorFactory()

    slugs = [
        services.component_upload(author=author, name="Fancy Button", source=FANCY_BUTTON_SOURCE).slug for _ in range(3)
    ]

    assert slugs == ["fancy-button", "fancy-button-2", "fancy-button-3"]


def test_upload_gets_a_slug_when_name_has_no_slug_characters():
    component = services.component_upload(author=AuthorFactory(), name="!!!", source=FANCY_BUTTON_SOURCE)

    assert component.slug == "component"


def test_upload_registers_nothing_when_transaction_rolls_back(null_broker, committed):
    author = AuthorFactory()

    with committed(), pytest.raises(RuntimeError), transaction.atomic():
        services.component_upload(author=author, name="Fancy Button", source=FANCY_BUTTON_SOURCE)
        raise RuntimeError("the caller fails after the upload")

    assert null_broker.published == []
    assert not Component.objects.exists()
    assert not Outbox.objects.exists()


@pytest.mark.parametrize(
    ("name", "source", "reason"),
    [
        ("", FANCY_BUTTON_SOURCE, "A component needs a name."),
        ("   ", FANCY_BUTTON_SOURCE, "A component needs a name."),
        ("Fancy Button", "", "The source is empty."),
        ("Fancy Button", " \n\t ", "The source is empty."),
        ("Fancy Button", FANCY_BUTTON_SOURCE + "x" * services.MAX_SOURCE_BYTES, "The source is larger than 256 KiB."),
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
    source = FANCY_BUTTON_SOURCE + "é" * (services.MAX_SOURCE_BYTES // 2)

    with pytest.raises(ValidationFailed):
        services.component_upload(author=AuthorFactory(), name="Wide", source=source)


def test_upload_is_accepted_when_source_is_exactly_at_the_limit():
    source = FANCY_BUTTON_SOURCE + "x" * (services.MAX_SOURCE_BYTES - len(FANCY_BUTTON_SOURCE.encode()))

    component = services.component_upload(author=AuthorFactory(), name="Big", source=source)

    assert len(Component.objects.get(pk=component.pk).source.encode()) == services.MAX_SOURCE_BYTES


def test_upload_is_refused_when_name_is_longer_than_the_column():
    with pytest.raises(ValidationFailed):
        services.component_upload(author=AuthorFactory(), name="x" * 201, source=FANCY_BUTTON_SOURCE)
    assert not Component.objects.exists()


# --- component_new_version ------------------------------------------------------------------


def test_new_version_puts_component_back_to_pending_and_registers_an_upload(committed, published_facts):
    component = ComponentFactory(
        status=Component.Status.REJECTED, rejection_reason="Missing required front matter field(s): version."
    )

    with committed():
        services.component_new_version(component=component, source=FANCY_BUTTON_SOURCE)

    stored = Component.objects.get(pk=component.pk)
    assert stored.status == Component.Status.PENDING
    assert stored.source == FANCY_BUTTON_SOURCE
    assert stored.rejection_reason == ""
    assert published_facts() == [(ComponentUploaded, {"component_id": component.pk, "author_id": component.author_id})]


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


def test_processing_publishes_component_when_source_is_valid(committed, published_facts):
    author = AuthorFactory()
    component = ComponentFactory(author=author, name="Fancy Button", source=FANCY_BUTTON_SOURCE)

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
    assert published_facts() == [
        (ComponentPublished, {"component_id": component.pk, "author_id": author.pk, "version": "2.1.0"}),
        (
            NotificationRequested,
            {
                "user_id": author.user_id,
                "subject": "Fancy Button 2.1.0 is published",
                "body": "Your component passed the checks and is now listed.",
                "idempotency_key": f"published-{component.pk}-{source_digest(FANCY_BUTTON_SOURCE)}",
            },
        ),
    ]


def test_processing_rejects_component_with_the_reason_when_source_is_invalid(committed, published_facts):
    author = AuthorFactory()
    component = ComponentFactory(author=author, name="Broken", source=INVALID_SOURCE)
    reason = "Missing required front matter field(s): version, description."

    with committed():
        services.component_process_upload(component_id=component.pk)

    stored = Component.objects.get(pk=component.pk)
    assert stored.status == Component.Status.REJECTED
    assert stored.rejection_reason == reason
    assert stored.version == ""
    assert published_facts() == [
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


@pytest.mark.parametrize("source", [FANCY_BUTTON_SOURCE, INVALID_SOURCE], ids=["published", "rejected"])
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
    services.component_new_version(component=Component.objects.get(pk=component.pk), source=FANCY_BUTTON_SOURCE)

    services.component_process_upload(component_id=component.pk)

    stored = Component.objects.get(pk=component.pk)
    assert stored.status == Component.Status.PUBLISHED
    assert stored.version == "2.1.0"
    assert stored.rejection_reason == ""


# --- the whole chain through a TestBroker ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_upload_is_published_indexed_and_notified_in_process_when_messages_are_processed(mailoutbox):
    author = AuthorFactory()
    broker = TestBroker()

    with override_message_broker(broker):
        component = services.component_upload(author=author, name="Fancy Button", source=FANCY_BUTTON_SOURCE)
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
