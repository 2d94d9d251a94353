"""``/components/{slug}/rating``: a user's 1..5 rating of a published component."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router

from marketplace import selectors, services
from marketplace.api.auth import write_auth
from marketplace.api.errors import ERRORS
from marketplace.api.schemas import RatingIn, RatingOut, Slug

router = Router(tags=["components"])


@router.put(
    "/{slug}/rating",
    response={200: RatingOut, **ERRORS},
    auth=write_auth,
    summary="Rate a component 1..5 (again to change the rating)",
)
def component_rate(request: HttpRequest, slug: Slug, payload: RatingIn) -> dict[str, Any]:
    """One rating per user and component; rating again replaces it. Only published components."""
    component = selectors.component_get_visible(slug=slug, user_id=request.auth.pk)
    rating = services.component_rate(component=component, user=request.auth, score=payload.score)
    component.refresh_from_db(fields=["rating_count", "rating_average"])
    return {
        "component": component.slug,
        "score": rating.score,
        "rating_count": component.rating_count,
        "rating_average": component.rating_average,
    }
