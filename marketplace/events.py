"""Marketplace domain events: IDs and small facts only; handlers re-read the database."""

from dataclasses import dataclass

from tasks.messages import Message


@dataclass(frozen=True)
class ComponentUploaded(Message):
    component_id: int
    author_id: int


@dataclass(frozen=True)
class ComponentPublished(Message):
    component_id: int
    author_id: int
    version: str


@dataclass(frozen=True)
class ComponentRejected(Message):
    component_id: int
    author_id: int
    reason: str


@dataclass(frozen=True)
class ComponentDeleted(Message):
    component_id: int
    author_id: int


@dataclass(frozen=True)
class ComponentRated(Message):
    component_id: int
    author_id: int
    user_id: int
    score: int


@dataclass(frozen=True)
class ComponentDownloaded(Message):
    component_id: int
    user_id: int | None = None


@dataclass(frozen=True)
class NotificationRequested(Message):
    user_id: int
    subject: str
    body: str
    idempotency_key: str
