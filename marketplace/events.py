"""Marketplace domain events: IDs and small facts only; handlers re-read the database."""

from dataclasses import dataclass

from tasks.messages import Message


class ComponentStream:
    """What happens to a component, for other services too: the relay appends every committed
    event of these classes to the ``marketplace.components`` stream, in commit order per
    component (README "Consuming events from another service"). A mixin, not an event."""

    stream = "marketplace.components"
    stream_key = "component_id"


@dataclass(frozen=True)
class ComponentUploaded(ComponentStream, Message):
    component_id: int
    author_id: int


@dataclass(frozen=True)
class ComponentPublished(ComponentStream, Message):
    component_id: int
    author_id: int
    version: str


@dataclass(frozen=True)
class ComponentRejected(ComponentStream, Message):
    component_id: int
    author_id: int
    reason: str


@dataclass(frozen=True)
class ComponentDeleted(ComponentStream, Message):
    component_id: int
    author_id: int


@dataclass(frozen=True)
class ComponentRated(ComponentStream, Message):
    component_id: int
    author_id: int
    user_id: int
    score: int


@dataclass(frozen=True)
class ComponentDownloaded(ComponentStream, Message):
    component_id: int
    user_id: int | None = None


@dataclass(frozen=True)
class NotificationRequested(Message):
    user_id: int
    subject: str
    body: str
    idempotency_key: str
