"""Reads and writes the JSON API needs beyond services.py and selectors.py.

Kept apart so the API's needs (visibility rules, ownership, token lookup) do not grow the
shared services module; the writes still go through ``services`` and so through the bus.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from marketplace import selectors, services
from marketplace.errors import NotFound, PermissionDenied
from marketplace.models import ApiToken, Author, Component
from tasks.transaction import transactional

# last_used_at is written at most this often per token, so a busy client costs one UPDATE a
# minute, not one per request.
TOKEN_LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_token_authenticate(*, key: str) -> ApiToken | None:
    """The active token whose key is ``key`` (looked up by hash), or None; notes its use."""
    token = ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash_key(key)).first()
    if token is None or not token.is_active or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at <= now - TOKEN_LAST_USED_RESOLUTION:
        # Conditional UPDATE: concurrent requests of one token write the timestamp once.
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - TOKEN_LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        token.last_used_at = now
    return token


def components_visible(
    *, user_id: int | None, query: str = "", status: str | None = None, author: str = ""
) -> QuerySet:
    """Components a caller may list: published ones, and with ``status`` set, their own of that status."""
    if status and status != Component.Status.PUBLISHED:
        queryset = selectors.component_list(status=status).filter(author__user_id=user_id)
    elif query:
        queryset = selectors.search_components(query).select_related("author__user")
    else:
        queryset = selectors.component_list()
    if query and status and status != Component.Status.PUBLISHED:
        queryset = queryset.filter(Q(name__icontains=query) | Q(description__icontains=query))
    if author:
        queryset = queryset.filter(author__user__username=author)
    return queryset


def component_visible_get(*, slug: str, user_id: int | None) -> Component:
    """A published component, or the caller's own in any status; NotFound otherwise."""
    component = Component.objects.select_related("author__user").filter(slug=slug).first()
    if component is None or (component.status != Component.Status.PUBLISHED and component.author.user_id != user_id):
        raise NotFound("No component with this name.")
    return component


@transactional
def component_upload_by_user(*, user, name: str, source: str) -> Component:
    """Upload as ``user``, creating their author profile on first upload; a refused upload
    leaves no profile behind either (one transaction)."""
    author = services.author_get_or_create(user=user)
    return services.component_upload(author=author, name=name, source=source)


def component_new_version_by_owner(*, slug: str, user, source: str) -> Component:
    """Replace the source of ``user``'s component ``slug``: NotFound, or PermissionDenied for others'."""
    component = component_visible_get(slug=slug, user_id=user.pk)
    if component.author.user_id != user.pk:
        raise PermissionDenied("Only the author can upload a new version of this component.")
    return services.component_new_version(component=component, source=source)


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
