"""Search index of components: PostgreSQL full-text search, a plain-text fallback elsewhere.

On PostgreSQL ``Component.search_document`` is a weighted ``tsvector`` (name, then tags and
description) behind a GIN index; on SQLite it holds lower-cased text matched with LIKE.
"""

from __future__ import annotations

from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector, SearchVectorExact
from django.db import connection
from django.db.models import F, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.utils import timezone

from marketplace.models import Component, SearchDocumentField

SEARCH_CONFIG = "english"


class Matches(SearchVectorExact):
    """``search_document__matches=...``: ``@@`` against the tsvector column (PostgreSQL)."""

    lookup_name = "matches"


SearchDocumentField.register_lookup(Matches)


def _uses_full_text() -> bool:
    return connection.vendor == "postgresql"


def _document_expression() -> SearchVector:
    return (
        SearchVector("name", weight="A", config=SEARCH_CONFIG)
        + SearchVector(KeyTextTransform("tags", "metadata"), weight="B", config=SEARCH_CONFIG)
        + SearchVector("description", weight="C", config=SEARCH_CONFIG)
    )


def _plain_document(component: Component) -> str:
    tags = component.metadata.get("tags") or []
    tags = " ".join(map(str, tags)) if isinstance(tags, list) else str(tags)
    return " ".join([component.name, tags, component.description]).lower()


def components_index(*, queryset: QuerySet[Component]) -> int:
    """(Re)build the search document of every component in ``queryset``; return how many."""
    now = timezone.now()
    if _uses_full_text():
        return queryset.update(search_document=_document_expression(), indexed_at=now)
    components = list(queryset.only("pk", "name", "description", "metadata"))
    for component in components:
        component.search_document = _plain_document(component)
        component.indexed_at = now
    Component.objects.bulk_update(components, ["search_document", "indexed_at"], batch_size=500)
    return len(components)


def component_search_index_update(*, component_id: int) -> int:
    """Index one component (a published one is searchable, any other is removed)."""
    queryset = Component.objects.filter(pk=component_id)
    if not queryset.filter(status=Component.Status.PUBLISHED).exists():
        return queryset.update(search_document=None, indexed_at=timezone.now())
    return components_index(queryset=queryset)


def components_search_index_rebuild(*, batch_size: int = 500) -> int:
    """Rebuild the index of every published component in batches of ``batch_size``."""
    total, last_pk = 0, 0
    published = Component.objects.filter(status=Component.Status.PUBLISHED).order_by("pk")
    while True:
        pks = list(published.filter(pk__gt=last_pk).values_list("pk", flat=True)[:batch_size])
        if not pks:
            return total
        total += components_index(queryset=Component.objects.filter(pk__in=pks))
        last_pk = pks[-1]


def components_matching(query: str) -> QuerySet[Component]:
    """Indexed components matching ``query``, best first."""
    query = query.strip()
    indexed = Component.objects.filter(search_document__isnull=False)
    if not query:
        return indexed.none()
    if _uses_full_text():
        search = SearchQuery(query, config=SEARCH_CONFIG, search_type="websearch")
        return (
            indexed.filter(search_document__matches=search)
            .annotate(rank=SearchRank(F("search_document"), search))
            .order_by("-rank", "-created_at")
        )
    for word in query.lower().split():
        indexed = indexed.filter(search_document__contains=word)
    return indexed.order_by("-created_at")
