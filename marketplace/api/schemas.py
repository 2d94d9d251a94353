"""The API's request and response bodies and query parameters (pydantic, through django-ninja)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from ninja import Field, Schema
from pydantic import AfterValidator, ConfigDict, model_validator

from marketplace.api.pagination import MAX_PAGE_SIZE, PageParams
from marketplace.models import Author, Component
from marketplace.names import name_problem

# A database integer key; larger ids cannot exist and would overflow the driver.
MAX_ID = 2**63 - 1


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


def _name_text(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Text = Annotated[str, AfterValidator(_storable_text)]
# A name goes into email subjects and one-line displays: no line breaks or other controls.
Name = Annotated[str, AfterValidator(_name_text)]
Slug = Annotated[str, Field(pattern=r"^[-a-zA-Z0-9_]+$", max_length=220, examples=["hello"])]
Username = Annotated[str, Field(pattern=r"^[\w.@+-]+$", max_length=150, examples=["admin"])]


class ErrorOut(Schema):
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None


class ComponentSummaryOut(Schema):
    """A component in a list: everything but its metadata, which only the detail shows."""

    slug: str
    name: str
    version: str
    description: str
    status: Component.Status
    rejection_reason: str
    author: str = Field(description="The author's username.")
    download_count: int
    rating_count: int
    rating_average: float
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_author(obj: Component) -> str:
        return obj.author.user.get_username()


class ComponentOut(ComponentSummaryOut):
    """One component, with the metadata of its front matter."""

    metadata: dict[str, Any]


class ComponentPage(Schema):
    count: int
    limit: int
    offset: int
    items: list[ComponentSummaryOut]


class ComponentUploadIn(Schema):
    name: Annotated[Name, Field(min_length=1, max_length=200)]
    source: Annotated[Text, Field(min_length=1, description="Source text starting with YAML front matter.")]


class ComponentVersionIn(Schema):
    source: Annotated[Text, Field(min_length=1)]


class ComponentFilters(PageParams):
    q: Annotated[Text, Field(max_length=200)] = Field("", description="Full-text search over published components.")
    status: Component.Status | None = Field(
        None, description="pending or rejected: only the caller's own components (needs a token)."
    )
    author: Username | None = Field(None, description="Only components of this author (username).")


class MyComponentFilters(PageParams):
    status: Component.Status | None = None


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


class NotificationFilters(PageParams):
    unread: bool = False


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
