"""Model signals turned into events: a deleted component tells its author's reputation."""

import dataclasses
from decimal import Decimal

import pytest
from django.db import transaction

from marketplace.events import ComponentDeleted
from marketplace.models import Author, Component
from tasks.bus import TestBroker, override_message_broker
from tasks.models import Outbox
from tests.marketplace.factories import AuthorFactory, ComponentFactory, PublishedComponentFactory, RatingFactory

pytestmark = pytest.mark.django_db


def deleted_facts(broker) -> list[dict]:
    return [
        {"component_id": m.component_id, "author_id": m.author_id}
        for m in broker.published
        if isinstance(m, ComponentDeleted)
    ]


def test_deleting_a_component_registers_component_deleted_with_its_author(null_broker, committed):
    component = ComponentFactory()
    component_id, author_id = component.pk, component.author_id

    with committed(), transaction.atomic():
        component.delete()

    assert [type(m) for m in null_broker.published] == [ComponentDeleted]
    assert dataclasses.asdict(null_broker.published[0]) | {"message_id": None, "occurred_at": None} == {
        "component_id": component_id,
        "author_id": author_id,
        "message_id": None,
        "occurred_at": None,
    }
    assert Outbox.objects.get().message_type == ComponentDeleted.message_name


def test_deleting_components_in_bulk_registers_one_event_each(null_broker, committed):
    author = AuthorFactory()
    components = ComponentFactory.create_batch(3, author=author)

    with committed():
        Component.objects.filter(author=author).delete()

    assert sorted(deleted_facts(null_broker), key=lambda f: f["component_id"]) == [
        {"component_id": c.pk, "author_id": author.pk} for c in sorted(components, key=lambda c: c.pk)
    ]


def test_deleting_a_component_registers_nothing_when_the_transaction_rolls_back(null_broker, committed):
    component = ComponentFactory()
    component_id = component.pk

    with committed(), pytest.raises(RuntimeError), transaction.atomic():
        component.delete()
        raise RuntimeError("undo")

    assert null_broker.published == []
    assert Component.objects.filter(pk=component_id).exists()
    assert not Outbox.objects.exists()


@pytest.mark.parametrize("deleted", ["author", "user"])
def test_deleting_the_author_registers_nothing_for_its_components(null_broker, committed, deleted):
    author = AuthorFactory()
    ComponentFactory.create_batch(2, author=author)

    with committed(), transaction.atomic():
        (author if deleted == "author" else author.user).delete()

    assert not Component.objects.exists()
    assert deleted_facts(null_broker) == []


def test_deleting_a_rated_component_lowers_the_authors_reputation_through_the_bus(
    django_capture_on_commit_callbacks,
):
    author = AuthorFactory(reputation=Decimal("3.00"))
    RatingFactory.create_batch(2, component=PublishedComponentFactory(author=author), score=5)
    poor = PublishedComponentFactory(author=author)
    RatingFactory.create_batch(2, component=poor, score=1)
    broker = TestBroker()

    with override_message_broker(broker):
        with django_capture_on_commit_callbacks(execute=True):
            poor.delete()
        assert broker.process_messages() == 1

    assert Author.objects.get(pk=author.pk).reputation == Decimal("5.00")
