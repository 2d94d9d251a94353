"""``/me``: the caller's own components and notifications (a token is always needed)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router

from marketplace import selectors, services
from marketplace.api.auth import read_auth, write_auth
from marketplace.api.errors import ERRORS
from marketplace.api.pagination import paginate
from marketplace.api.schemas import (
    ComponentPage,
    MarkReadIn,
    MarkReadOut,
    MyComponentFilters,
    NotificationFilters,
    NotificationPage,
)

router = Router(tags=["me"])


@router.get(
    "/components",
    response={200: ComponentPage, **ERRORS},
    auth=read_auth,
    summary="My components, in every status",
)
def my_components(request: HttpRequest, filters: Query[MyComponentFilters]) -> dict[str, Any]:
    """The caller's components, newest first, with the reason of any rejection."""
    return paginate(selectors.component_list(status=filters.status, user_id=request.auth.pk), filters)


@router.get(
    "/notifications",
    response={200: NotificationPage, **ERRORS},
    auth=read_auth,
    summary="My notifications",
)
def my_notifications(request: HttpRequest, filters: Query[NotificationFilters]) -> dict[str, Any]:
    """Newest first; ``unread=true`` for the unread ones only."""
    return paginate(selectors.notification_list(user_id=request.auth.pk, unread_only=filters.unread), filters)


@router.post(
    "/notifications/read",
    response={200: MarkReadOut, **ERRORS},
    auth=write_auth,
    summary="Mark my notifications read",
)
def my_notifications_mark_read(request: HttpRequest, payload: MarkReadIn) -> dict[str, int]:
    """Mark the given notifications (or all) read; others' ids are ignored. Returns how many changed."""
    marked = services.notifications_mark_read(
        user_id=request.auth.pk, notification_ids=None if payload.all else payload.ids
    )
    return {"marked": marked}
