"""Hostile uploads through the path a worker runs (the service, the bus, the handler, the JSON
round trip): each bad document ends as a rejected component with a reason, never an exception
(which the worker would retry into a dead letter, leaving the component pending), and names
cannot break the notification that follows."""

import pytest

from marketplace import events, handlers, services
from marketplace.errors import ValidationFailed
from marketplace.models import Component, Notification
from tasks.bus import TestBroker, override_message_broker
from tests.marketplace.factories import FANCY_BUTTON_SOURCE, AuthorFactory, ComponentFactory
from tests.marketplace.test_front_matter import ALIAS_BOMB

pytestmark = pytest.mark.django_db

HEAD = "---\nname: Hostile\nversion: 1.0.0\ndescription: d\n"
HOSTILE = {
    "alias-bomb": (ALIAS_BOMB, "Anchors and aliases (&name, *name) are not allowed (line 5)."),
    "month-13": (f"{HEAD}released: 2024-13-01\n---\n", "The date '2024-13-01' is not valid (line 5)."),
    "5000-digits": (f"{HEAD}n: {'7' * 5000}\n---\n", "An integer has more than 64 digits (line 5)."),
    "3000-deep": (f"{HEAD}x: {'[' * 3000}{']' * 3000}\n---\n", "nested more than 20 levels deep (line 5)."),
    "200-deep-block": (
        HEAD + "x:\n" + "".join(f"{'  ' * i}-\n" for i in range(1, 201)) + "---\n",
        "nested more than 20 levels deep (line 25).",
    ),
    "inf": (f"{HEAD}x: .inf\n---\n", "is not a finite number (JSON cannot store it) (line 5)."),
    "nul-escape": (f'{HEAD}x: "\\0"\n---\n', "The front matter must not contain NUL characters (\\0)."),
    "too-much-metadata": (f"{HEAD}x: [{', '.join(['abcdefgh'] * 2000)}]\n---\n", "at most 16 KiB is stored."),
}


def _process_as_a_worker(author, name: str, source: str) -> Component:
    broker = TestBroker()
    with override_message_broker(broker):
        component = services.component_upload(author=author, name=name, source=source)
        broker.process_messages()  # errors propagate: a crash here would be a dead letter in production
    return Component.objects.get(pk=component.pk)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("source", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_front_matter_is_rejected_with_its_reason_and_the_author_told(mailoutbox, source, reason):
    stored = _process_as_a_worker(author := AuthorFactory(), "Hostile", source)

    assert stored.status == Component.Status.REJECTED
    assert stored.rejection_reason.endswith(reason)
    assert stored.metadata == {}
    notification = Notification.objects.get(user=author.user)
    assert notification.subject == "Hostile was rejected"
    assert notification.body == stored.rejection_reason
    assert len(mailoutbox) == 1


@pytest.mark.usefixtures("null_broker")
@pytest.mark.parametrize(("source", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_the_upload_handler_rejects_a_stored_hostile_component_without_raising(source, reason):
    component = ComponentFactory(source=source)

    handlers.process_component_upload(
        events.ComponentUploaded(component_id=component.pk, author_id=component.author_id)
    )

    stored = Component.objects.get(pk=component.pk)
    assert (stored.status, stored.rejection_reason.endswith(reason)) == (Component.Status.REJECTED, True)


@pytest.mark.usefixtures("null_broker")
def test_a_name_with_a_line_break_is_refused_by_the_upload_service():
    with pytest.raises(ValidationFailed) as info:
        services.component_upload(author=AuthorFactory(), name="Evil\nBcc: x@example.com", source=FANCY_BUTTON_SOURCE)

    assert info.value.message == (
        "A component name must not contain control characters such as line breaks or tabs (found U+000A)."
    )
    assert not Component.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_200_character_name_is_published_and_its_author_notified_within_the_subject_column(mailoutbox):
    author = AuthorFactory()

    stored = _process_as_a_worker(author, "N" * 200, FANCY_BUTTON_SOURCE)

    assert stored.status == Component.Status.PUBLISHED
    subject = Notification.objects.get(user=author.user).subject
    assert len(subject) == 200
    assert subject == "N" * 199 + "…"
    assert mailoutbox[0].subject == subject


@pytest.mark.django_db(transaction=True)
def test_a_name_stored_with_a_line_break_before_the_refusal_is_notified_on_one_line(mailoutbox):
    component = ComponentFactory(name="Evil\nBcc: x@example.com", source=FANCY_BUTTON_SOURCE)
    broker = TestBroker()

    with override_message_broker(broker):
        handlers.process_component_upload(
            events.ComponentUploaded(component_id=component.pk, author_id=component.author_id)
        )
        broker.process_messages()

    assert Notification.objects.get().subject == "Evil Bcc: x@example.com 2.1.0 is published"
    assert mailoutbox[0].subject == "Evil Bcc: x@example.com 2.1.0 is published"
    assert "Bcc" not in mailoutbox[0].message()
