"""``/components``: list and search, one component, upload, and new versions by the owner."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router
from ninja.errors import HttpError
from ninja.responses import Status

from marketplace import selectors, services
from marketplace.api.auth import ANONYMOUS_ALLOWED, optional_read_auth, request_user_id, write_auth
from marketplace.api.errors import ERRORS
from marketplace.api.pagination import paginate
from marketplace.api.schemas import (
    ComponentFilters,
    ComponentOut,
    ComponentPage,
    ComponentUploadIn,
    ComponentVersionIn,
    Slug,
)
from marketplace.models import Component

router = Router(tags=["components"])


@router.get(
    "",
    response={200: ComponentPage, **ERRORS},
    auth=optional_read_auth,
    openapi_extra=ANONYMOUS_ALLOWED,
    summary="List and search components",
)
def components_list(request: HttpRequest, filters: Query[ComponentFilters]) -> dict[str, Any]:
    """Published components, newest first (best match first with ``q``); ``status`` other than
    ``published`` lists the caller's own components of that status."""
    user_id = request_user_id(request)
    if filters.status not in (None, Component.Status.PUBLISHED) and user_id is None:
        raise HttpError(401, "Listing unpublished components needs a token; they are only the owner's.")
    queryset = selectors.component_list_visible(
        user_id=user_id, query=filters.q.strip(), status=filters.status, author=filters.author or ""
    )
    return paginate(queryset, filters)


@router.get(
    "/{slug}",
    response={200: ComponentOut, **ERRORS},
    auth=optional_read_auth,
    openapi_extra=ANONYMOUS_ALLOWED,
    summary="One component",
)
def component_detail(request: HttpRequest, slug: Slug) -> Component:
    """A published component, or one of the caller's own in any status."""
    return selectors.component_get_visible(slug=slug, user_id=request_user_id(request))


@router.post(
    "",
    response={201: ComponentOut, **ERRORS},
    auth=write_auth,
    summary="Upload a component",
)
def component_upload(request: HttpRequest, payload: ComponentUploadIn) -> Status[Component]:
    """Store a new component as ``pending``; it is checked and published (or rejected, with a
    reason) in the background. The source must start with YAML front matter."""
    # Size first: an oversized upload is a 413 whatever else is wrong with it.
    services.component_source_size_check(source=payload.source)
    component = services.component_upload_by_user(user=request.auth, name=payload.name, source=payload.source)
    return Status(201, component)


@router.post(
    "/{slug}/versions",
    response={200: ComponentOut, **ERRORS},
    auth=write_auth,
    summary="Upload a new version (owner only)",
)
def component_new_version(request: HttpRequest, slug: Slug, payload: ComponentVersionIn) -> Component:
    """Replace the source; the component is ``pending`` again until the new version is checked."""
    # Size first: an oversized source is a 413 whatever else is wrong with it (even not being yours).
    services.component_source_size_check(source=payload.source)
    return services.component_new_version_by_owner(slug=slug, user=request.auth, source=payload.source)
