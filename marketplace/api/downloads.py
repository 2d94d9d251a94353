"""``/components/{slug}/download``: a recorded download of a component's source."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from marketplace import selectors, services
from marketplace.api.auth import ANONYMOUS_ALLOWED, optional_write_auth, request_user_id
from marketplace.api.errors import ERRORS
from marketplace.api.schemas import DownloadOut, Slug
from marketplace.models import Component

router = Router(tags=["components"])


@router.post(
    "/{slug}/download",
    response={200: DownloadOut, **ERRORS},
    auth=optional_write_auth,
    openapi_extra=ANONYMOUS_ALLOWED,
    summary="Download a component's source (recorded)",
)
def component_download(request: HttpRequest, slug: Slug) -> Component:
    """Record a download (anonymous without a token) and return the source."""
    user = request.auth if request.auth.is_authenticated else None
    component = selectors.component_get_visible(slug=slug, user_id=request_user_id(request))
    services.component_download(component=component, user=user)
    return component
