"""``/authors/{username}``: an author's public profile."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from marketplace import selectors
from marketplace.api.auth import ANONYMOUS_ALLOWED, optional_read_auth
from marketplace.api.errors import ERRORS
from marketplace.api.schemas import AuthorOut, Username
from marketplace.models import Author

router = Router(tags=["authors"])


@router.get(
    "/{username}",
    response={200: AuthorOut, **ERRORS},
    auth=optional_read_auth,
    openapi_extra=ANONYMOUS_ALLOWED,
    summary="An author's profile and reputation",
)
def author_profile(request: HttpRequest, username: Username) -> Author:
    """Reputation is the average score over the ratings of the author's published components."""
    return selectors.author_profile_get(username=username)
