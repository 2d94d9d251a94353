"""Reads of the marketplace. Writes live in services.py."""

from __future__ import annotations

from django.db.models import QuerySet

from marketplace.models import Component, Notification
from marketplace.search import components_matching


def search_components(query: str) -> QuerySet[Component]:
    """Published components matching ``query`` through the search index, best first."""
    return components_matching(query).filter(status=Component.Status.PUBLISHED)


def component_list(*, status: str | None = Component.Status.PUBLISHED) -> QuerySet[Component]:
    """Components, newest first, with their author loaded."""
    queryset = Component.objects.select_related("author__user")
    return queryset.filter(status=status) if status else queryset


def notifications_for(*, user_id: int, unread_only: bool = False) -> QuerySet[Notification]:
    """A user's notifications, newest first."""
    queryset = Notification.objects.filter(user_id=user_id)
    return queryset.filter(read_at__isnull=True) if unread_only else queryset
