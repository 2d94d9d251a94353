"""The component search index: PostgreSQL full-text search, a plain-text fallback on SQLite."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from marketplace.models import Component
from marketplace.search import (
    component_search_index_update,
    components_index,
    components_matching,
    components_search_index_rebuild,
)
from marketplace.selectors import search_components
from tests.marketplace.factories import ComponentFactory, PublishedComponentFactory

pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="full-text search is PostgreSQL's")
on_sqlite = pytest.mark.skipif(connection.vendor != "sqlite", reason="the plain-text fallback is SQLite's")


def published(name: str, description: str = "", tags: list[str] | None = None, **kwargs) -> Component:
    """A published component, already indexed."""
    component = PublishedComponentFactory(
        name=name, description=description, metadata={"tags": tags or []} if tags is not None else {}, **kwargs
    )
    component_search_index_update(component_id=component.pk)
    return component


def found(query: str) -> list[str]:
    return [c.name for c in search_components(query)]


# --- indexing ---------------------------------------------------------------------------------


def test_components_index_indexes_every_component_of_the_queryset():
    chosen = PublishedComponentFactory.create_batch(2, description="sparkling widgets")
    left_out = PublishedComponentFactory(description="sparkling widgets")

    count = components_index(queryset=Component.objects.filter(pk__in=[c.pk for c in chosen]))

    assert count == 2
    assert Component.objects.filter(pk__in=[c.pk for c in chosen], indexed_at__isnull=False).count() == 2
    assert Component.objects.get(pk=left_out.pk).indexed_at is None
    assert {c.pk for c in search_components("sparkling")} == {c.pk for c in chosen}


def test_published_component_is_searchable_only_after_it_is_indexed():
    component = PublishedComponentFactory(description="sparkling widgets")
    assert found("sparkling") == []

    assert component_search_index_update(component_id=component.pk) == 1

    assert found("sparkling") == [component.name]
    assert Component.objects.get(pk=component.pk).indexed_at is not None


@pytest.mark.parametrize("status", [Component.Status.PENDING, Component.Status.REJECTED])
def test_index_update_removes_a_component_when_it_is_not_published(status):
    component = published("Sparkle", "sparkling widgets")
    Component.objects.filter(pk=component.pk).update(status=status)

    assert component_search_index_update(component_id=component.pk) == 1

    stored = Component.objects.get(pk=component.pk)
    assert stored.search_document is None
    assert stored.indexed_at is not None
    assert components_matching("sparkling").count() == 0


def test_index_update_does_nothing_when_component_does_not_exist():
    assert component_search_index_update(component_id=987654) == 0


def test_index_follows_changes_when_updated_again():
    component = published("Widget", "old words")
    Component.objects.filter(pk=component.pk).update(description="fresh words")
    assert found("fresh") == []

    component_search_index_update(component_id=component.pk)

    assert found("fresh") == ["Widget"]
    assert found("old") == []


def test_rebuild_indexes_every_published_component_in_batches():
    components = [PublishedComponentFactory(description=f"sparkling widget {n}") for n in range(5)]
    pending = ComponentFactory(status=Component.Status.PENDING, description="sparkling widget")
    rejected = ComponentFactory(status=Component.Status.REJECTED, description="sparkling widget")

    assert components_search_index_rebuild(batch_size=2) == 5

    assert Component.objects.filter(pk__in=[c.pk for c in components], indexed_at__isnull=False).count() == 5
    assert {c.pk for c in search_components("sparkling")} == {c.pk for c in components}
    assert Component.objects.get(pk=pending.pk).search_document is None
    assert Component.objects.get(pk=rejected.pk).search_document is None


def test_rebuild_returns_zero_when_nothing_is_published():
    ComponentFactory(status=Component.Status.PENDING)

    assert components_search_index_rebuild(batch_size=2) == 0


@pytest.mark.parametrize("batch_size", [1, 4, 500])
def test_rebuild_counts_each_component_once_whatever_the_batch_size(batch_size):
    PublishedComponentFactory.create_batch(4)

    assert components_search_index_rebuild(batch_size=batch_size) == 4


# --- search_components --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [("Sparkle", ["Sparkle Button"]), ("glittery", ["Plain Widget"]), ("carousel", ["Tagged Thing"])],
    ids=["name", "description", "tag"],
)
def test_search_finds_a_word_in_name_description_or_tags(query, expected):
    published("Sparkle Button", "A button for forms.")
    published("Plain Widget", "A glittery widget for pages.")
    published("Tagged Thing", "Nothing to see.", tags=["carousel", "slider"])

    assert found(query) == expected


def test_search_requires_every_word_when_query_has_several():
    published("Sparkle Button", "A shiny button.")
    published("Sparkle Slider", "A shiny slider.")
    published("Dull Button", "A plain button.")

    assert found("sparkle button") == ["Sparkle Button"]
    assert sorted(found("shiny")) == ["Sparkle Button", "Sparkle Slider"]
    assert found("sparkle carousel") == []


def test_search_is_case_insensitive():
    published("Sparkle Button", "A shiny button.")

    assert found("SPARKLE") == ["Sparkle Button"]


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_search_returns_nothing_when_query_is_empty(query):
    published("Sparkle Button", "A shiny button.")

    assert found(query) == []


def test_search_returns_only_published_components():
    component = published("Sparkle Button", "A shiny button.")
    Component.objects.filter(pk=component.pk).update(status=Component.Status.PENDING)  # index not yet updated

    assert found("sparkle") == []
    assert components_matching("sparkle").count() == 1  # still in the index, filtered by the selector


def test_search_does_not_find_unindexed_components():
    PublishedComponentFactory(name="Sparkle Button")

    assert found("sparkle") == []


@on_postgresql
def test_search_ranks_a_name_match_above_a_description_only_match():
    description_only = published("Plain Widget", "Works well with a sparkle effect.")
    name_match = published("Sparkle Effect", "A plain widget.")
    # Newest first would list the description-only match first: only the rank puts it second.
    Component.objects.filter(pk=name_match.pk).update(created_at=timezone.now() - timedelta(days=1))

    results = list(search_components("sparkle"))

    assert [c.pk for c in results] == [name_match.pk, description_only.pk]
    assert results[0].rank > results[1].rank


@on_postgresql
def test_search_matches_word_forms_when_full_text():
    published("Button Set", "Buttons that sparkled.")

    assert found("button sparkles") == ["Button Set"]


@on_postgresql
def test_search_document_is_a_tsvector_on_postgresql():
    component = published("Sparkle Button", "A shiny button.", tags=["ui"])

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_typeof(search_document)::text FROM marketplace_component WHERE id = %s", [component.pk]
        )
        assert cursor.fetchone() == ("tsvector",)


@on_sqlite
def test_search_document_is_lower_cased_text_on_sqlite():
    component = published("Sparkle Button", "A Shiny button.", tags=["UI", "Forms"])

    assert Component.objects.get(pk=component.pk).search_document == "sparkle button ui forms a shiny button."


@on_sqlite
def test_search_orders_newest_first_on_sqlite():
    published("Sparkle One", "")
    older = published("Sparkle Two", "")  # created last, but dated earlier
    Component.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(days=1))

    assert found("sparkle") == ["Sparkle One", "Sparkle Two"]
