"""Reads of the marketplace: ``<entity>_<action>(*, ...)``. Writes live in services.py."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from marketplace.errors import NotFound
from marketplace.models import Author, Component, Notification
from marketplace.search import components_matching

# A list shows no source (up to 256 KiB each) and no metadata (up to 16 KiB): only the detail
# does, so a page of 100 is not megabytes read from the database and sent to anyone who asks.
LIST_DEFERRED_FIELDS = ("source", "metadata", "search_document")


def search_components(query: str) -> QuerySet[Component]:
    """Published components matching ``query`` through the search index, best first."""
    return components_matching(query).filter(status=Component.Status.PUBLISHED)


def component_list(
    *, status: str | None = Component.Status.PUBLISHED, user_id: int | None = None
) -> QuerySet[Component]:
    """Components, newest first, with their author loaded; with ``user_id``, only that user's.

    The source and metadata are not read (``LIST_DEFERRED_FIELDS``): lists do not show them.
    """
    queryset = Component.objects.select_related("author__user").defer(*LIST_DEFERRED_FIELDS)
    if user_id is not None:
        queryset = queryset.filter(author__user_id=user_id)
    return queryset.filter(status=status) if status else queryset


def component_list_visible(
    *, user_id: int | None, query: str = "", status: str | None = None, author: str = ""
) -> QuerySet[Component]:
    """Components a caller may list: published ones, and with ``status`` set, their own of that status."""
    if status and status != Component.Status.PUBLISHED:
        queryset = component_list(status=status).filter(author__user_id=user_id)
    elif query:
        queryset = search_components(query).select_related("author__user").defer(*LIST_DEFERRED_FIELDS)
    else:
        queryset = component_list()
    if query and status and status != Component.Status.PUBLISHED:
        queryset = queryset.filter(Q(name__icontains=query) | Q(description__icontains=query))
    if author:
        queryset = queryset.filter(author__user__username=author)
    return queryset


def component_get_visible(*, slug: str, user_id: int | None) -> Component:
    """A published component, or the caller's own in any status; NotFound otherwise."""
    component = Component.objects.select_related("author__user").filter(slug=slug).first()
    if component is None or (component.status != Component.Status.PUBLISHED and component.author.user_id != user_id):
        raise NotFound("No component with this name.")
    return component


def author_profile_get(*, username: str) -> Author:
    """An author with ``published_count`` (their published components); NotFound when none."""
    author = (
        Author.objects.select_related("user")
        .annotate(published_count=Count("components", filter=Q(components__status=Component.Status.PUBLISHED)))
        .filter(user__username=username)
        .first()
    )
    if author is None:
        raise NotFound("No author with this name.")
    return author


def notification_list(*, user_id: int, unread_only: bool = False) -> QuerySet[Notification]:
    """A user's notifications, newest first."""
    queryset = Notification.objects.filter(user_id=user_id)
    return queryset.filter(read_at__isnull=True) if unread_only else queryset
