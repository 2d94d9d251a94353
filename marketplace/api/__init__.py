"""The marketplace JSON API (django-ninja), mounted at ``/api/v1/``.

OpenAPI document at ``/api/v1/openapi.json``, interactive docs at ``/api/v1/docs``. Views are
thin: they check HTTP-level limits, then call services and selectors. Every
error, whatever raised it, has one shape, ``{"detail": str, "code": str}`` (422s add
``errors``), and a status from ``ERROR_STATUS`` / the handlers below.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from ninja import Field, NinjaAPI, Query, Schema
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.responses import Status
from pydantic import AfterValidator, ConfigDict, model_validator

from marketplace import selectors, services
from marketplace.api_auth import (
    RateLimited,
    optional_read_auth,
    optional_write_auth,
    read_auth,
    write_auth,
)
from marketplace.errors import ApplicationError, Conflict, NotFound, PermissionDenied, ValidationFailed
from marketplace.models import Author, Component

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
# Deep offsets are refused: they cost a scan of every skipped row (and overflow 64-bit
# integers long before that); a client that needs more narrows the query.
MAX_OFFSET = 10_000
# A database integer key; larger ids cannot exist and would overflow the driver.
MAX_ID = 2**63 - 1


class PayloadTooLarge(Exception):
    """The request carries more than the API accepts (413)."""


ERROR_STATUS: dict[type[ApplicationError], int] = {
    ValidationFailed: 422,
    NotFound: 404,
    Conflict: 409,
    PermissionDenied: 403,
}
HTTP_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    429: "rate_limited",
}


def _storable_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and lone surrogates (valid in JSON escapes) cannot be
    # encoded as UTF-8: refused here as a 422 instead of failing in the database as a 500.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from exc
    return value


Text = Annotated[str, AfterValidator(_storable_text)]
Slug = Annotated[str, Field(pattern=r"^[-a-zA-Z0-9_]+$", max_length=220, examples=["hello"])]
Username = Annotated[str, Field(pattern=r"^[\w.@+-]+$", max_length=150, examples=["admin"])]


# --- Schemas ------------------------------------------------------------------------------


class ErrorOut(Schema):
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None


class ComponentOut(Schema):
    slug: str
    name: str
    version: str
    description: str
    status: Component.Status
    rejection_reason: str
    author: str = Field(description="The author's username.")
    metadata: dict[str, Any]
    download_count: int
    rating_count: int
    rating_average: float
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_author(obj: Component) -> str:
        return obj.author.user.get_username()


class ComponentPage(Schema):
    count: int
    limit: int
    offset: int
    items: list[ComponentOut]


class ComponentUploadIn(Schema):
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    source: Annotated[Text, Field(min_length=1, description="Source text starting with YAML front matter.")]


class ComponentVersionIn(Schema):
    source: Annotated[Text, Field(min_length=1)]


class RatingIn(Schema):
    # Strict: JSON true or "5" is not a score (lax mode would read them as 1 and 5).
    score: int = Field(ge=1, le=5, strict=True)


class RatingOut(Schema):
    component: str
    score: int
    rating_count: int
    rating_average: float


class DownloadOut(Schema):
    slug: str
    name: str
    version: str
    source: str


class AuthorOut(Schema):
    username: str
    display_name: str
    bio: str
    reputation: float
    published_components: int
    created_at: datetime

    @staticmethod
    def resolve_username(obj: Author) -> str:
        return obj.user.get_username()

    @staticmethod
    def resolve_published_components(obj: Author) -> int:
        return obj.published_count


class NotificationOut(Schema):
    id: int
    subject: str
    body: str
    created_at: datetime
    read_at: datetime | None


class NotificationPage(Schema):
    count: int
    limit: int
    offset: int
    items: list[NotificationOut]


class MarkReadIn(Schema):
    """Either ``{"ids": [...]}`` or ``{"all": true}``: a body that names neither marks nothing,
    rather than being read as "all" (a stray or malformed body must not clear an inbox)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(
        None, min_length=1, max_length=MAX_PAGE_SIZE, description="Notifications to mark read."
    )
    all: bool = Field(False, strict=True, description="Mark every notification read.")

    @model_validator(mode="after")
    def _ids_or_all(self) -> MarkReadIn:
        if (self.ids is None) == (not self.all):
            raise ValueError('give either "ids" or "all": true')
        return self


class MarkReadOut(Schema):
    marked: int


class PageParams(Schema):
    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class ComponentFilters(PageParams):
    q: Annotated[Text, Field(max_length=200)] = Field("", description="Full-text search over published components.")
    status: Component.Status | None = Field(
        None, description="pending or rejected: only the caller's own components (needs a token)."
    )
    author: Username | None = Field(None, description="Only components of this author (username).")


class MyComponentFilters(PageParams):
    status: Component.Status | None = None


class NotificationFilters(PageParams):
    unread: bool = False


# --- API and error handling ------------------------------------------------------------

api = NinjaAPI(
    title="Component marketplace API",
    version="1",
    description="Upload, find, rate and download components. Authenticate with `Authorization: Bearer <key>`; "
    "keys come from `manage.py issue_token USER` or the admin. Errors are `{detail, code}`.",
    urls_namespace="marketplace-api",
)

# Every operation documents every error status it can answer, so a client (and the fuzzer's
# schema checks) can rely on the document: 400 unreadable body, 401 no or bad token, 403 not
# yours, 404 no such thing, 409 state conflict, 413 too large, 422 invalid, 429 rate limited.
ERRORS = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 422, 429)}

# Appended to the operation's security list: the empty requirement says "or no token at all",
# so the document tells clients these operations also answer anonymous callers.
ANONYMOUS_ALLOWED = {"security": [{}]}


def _error(request: HttpRequest, status: int, detail: str, code: str, **extra: Any) -> HttpResponse:
    return api.create_response(request, {"detail": detail, "code": code, **extra}, status=status)


@api.exception_handler(ApplicationError)
def _application_error(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    status = next((s for cls, s in ERROR_STATUS.items() if isinstance(exc, cls)), 400)
    return _error(request, status, exc.message, exc.code)


@api.exception_handler(NinjaValidationError)
def _validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    errors = [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors]
    summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "Invalid request."
    return _error(request, 422, summary, "invalid", errors=errors)


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # ninja wraps errors of reading the body in a 400; one that was too big is a 413.
    if isinstance(exc.__cause__, RequestDataTooBig):
        return _request_too_big(request, exc.__cause__)
    return _error(request, exc.status_code, str(exc), HTTP_ERROR_CODES.get(exc.status_code, "error"))


@api.exception_handler(RequestDataTooBig)
def _request_too_big(request: HttpRequest, exc: Exception) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return _error(request, 413, f"The request body is larger than {limit} bytes.", "too_large")


@api.exception_handler(PayloadTooLarge)
def _payload_too_large(request: HttpRequest, exc: PayloadTooLarge) -> HttpResponse:
    return _error(request, 413, str(exc), "too_large")


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, "Not found.", "not_found")


@api.exception_handler(RateLimited)
def _rate_limited(request: HttpRequest, exc: RateLimited) -> HttpResponse:
    response = _error(request, 429, str(exc), "rate_limited")
    response["Retry-After"] = str(exc.retry_after)
    return response


def _check_source_size(source: str) -> None:
    # Checked here, before the service, so an oversized upload is a 413 and not a 422.
    if len(source.encode()) > services.MAX_SOURCE_BYTES:
        raise PayloadTooLarge(f"The source is larger than {services.MAX_SOURCE_BYTES // 1024} KiB.")


def _page(queryset: QuerySet, params: PageParams) -> dict[str, Any]:
    return {
        "count": queryset.count(),
        "limit": params.limit,
        "offset": params.offset,
        "items": list(queryset[params.offset : params.offset + params.limit]),
    }


def _user_id(request: HttpRequest) -> int | None:
    return request.auth.pk if request.auth.is_authenticated else None


# --- Components ---------------------------------------------------------------------------


@api.get(
    "/components",
    response={200: ComponentPage, **ERRORS},
    auth=optional_read_auth,
    openapi_extra=ANONYMOUS_ALLOWED,
    tags=["components"],
    summary="List and search components",
)
def components_list(request: HttpRequest, filters: Query[ComponentFilters]) -> dict[str, Any]:
    """Published components, newest first (best match first with ``q``); ``status`` other than
    ``published`` lists the caller's own components of that status."""
    user_id = _user_id(request)
    if filters.status not in (None, Component.Status.PUBLISHED) and user_id is None:
        raise HttpError(401, "Listing unpublished components needs a token; they are only the owner's.")
    queryset = selectors.component_list_visible(
        user_id=user_id, query=filters.q.strip(), status=filters.status, author=filters.author or ""
    )
    return _page(queryset, filters)


@api.get(
    "/components/{slug}",
    response={200: ComponentOut, **ERRORS},
    auth=optional_read_auth,
    openapi_extra=ANONYMOUS_ALLOWED,
    tags=["components"],
    summary="One component",
)
def component_detail(request: HttpRequest, slug: Slug) -> Component:
    """A published component, or one of the caller's own in any status."""
    return selectors.component_get_visible(slug=slug, user_id=_user_id(request))


@api.post(
    "/components",
    response={201: ComponentOut, **ERRORS},
    auth=write_auth,
    tags=["components"],
    summary="Upload a component",
)
def component_upload(request: HttpRequest, payload: ComponentUploadIn) -> Status[Component]:
    """Store a new component as ``pending``; it is checked and published (or rejected, with a
    reason) in the background. The source must start with YAML front matter."""
    _check_source_size(payload.source)
    component = services.component_upload_by_user(user=request.auth, name=payload.name, source=payload.source)
    return Status(201, component)


@api.post(
    "/components/{slug}/versions",
    response={200: ComponentOut, **ERRORS},
    auth=write_auth,
    tags=["components"],
    summary="Upload a new version (owner only)",
)
def component_new_version(request: HttpRequest, slug: Slug, payload: ComponentVersionIn) -> Component:
    """Replace the source; the component is ``pending`` again until the new version is checked."""
    _check_source_size(payload.source)
    return services.component_new_version_by_owner(slug=slug, user=request.auth, source=payload.source)


@api.put(
    "/components/{slug}/rating",
    response={200: RatingOut, **ERRORS},
    auth=write_auth,
    tags=["components"],
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


@api.post(
    "/components/{slug}/download",
    response={200: DownloadOut, **ERRORS},
    auth=optional_write_auth,
    openapi_extra=ANONYMOUS_ALLOWED,
    tags=["components"],
    summary="Download a component's source (recorded)",
)
def component_download(request: HttpRequest, slug: Slug) -> Component:
    """Record a download (anonymous without a token) and return the source."""
    user = request.auth if request.auth.is_authenticated else None
    component = selectors.component_get_visible(slug=slug, user_id=_user_id(request))
    services.component_download(component=component, user=user)
    return component


# --- Authors and the caller's own things ------------------------------------------------------


@api.get(
    "/authors/{username}",
    response={200: AuthorOut, **ERRORS},
    auth=optional_read_auth,
    openapi_extra=ANONYMOUS_ALLOWED,
    tags=["authors"],
    summary="An author's profile and reputation",
)
def author_profile(request: HttpRequest, username: Username) -> Author:
    """Reputation is the average score over the ratings of the author's published components."""
    return selectors.author_profile_get(username=username)


@api.get(
    "/me/components",
    response={200: ComponentPage, **ERRORS},
    auth=read_auth,
    tags=["me"],
    summary="My components, in every status",
)
def my_components(request: HttpRequest, filters: Query[MyComponentFilters]) -> dict[str, Any]:
    """The caller's components, newest first, with the reason of any rejection."""
    queryset = selectors.component_list(status=filters.status, user_id=request.auth.pk)
    return _page(queryset, filters)


@api.get(
    "/me/notifications",
    response={200: NotificationPage, **ERRORS},
    auth=read_auth,
    tags=["me"],
    summary="My notifications",
)
def my_notifications(request: HttpRequest, filters: Query[NotificationFilters]) -> dict[str, Any]:
    """Newest first; ``unread=true`` for the unread ones only."""
    return _page(selectors.notification_list(user_id=request.auth.pk, unread_only=filters.unread), filters)


@api.post(
    "/me/notifications/read",
    response={200: MarkReadOut, **ERRORS},
    auth=write_auth,
    tags=["me"],
    summary="Mark my notifications read",
)
def my_notifications_mark_read(request: HttpRequest, payload: MarkReadIn) -> dict[str, int]:
    """Mark the given notifications (or all) read; others' ids are ignored. Returns how many changed."""
    marked = services.notifications_mark_read(
        user_id=request.auth.pk, notification_ids=None if payload.all else payload.ids
    )
    return {"marked": marked}
