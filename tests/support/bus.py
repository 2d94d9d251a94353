"""Messages and handlers for the bus tests, importable by path as a worker imports handlers."""

import uuid
from dataclasses import dataclass

from tasks.bus import get_message_broker
from tasks.messages import Message

MODULE = __name__


@dataclass(frozen=True)
class Ping(Message):
    number: int


@dataclass(frozen=True)
class LoudPing(Ping):
    volume: int = 11


@dataclass(frozen=True)
class FollowUp(Message):
    origin: uuid.UUID


@dataclass(frozen=True)
class Unrelated(Message):
    text: str


calls: list[tuple[str, Message]] = []
# The messages ``remember`` received, for tests that only ask what a sync handler saw.
seen: list[Message] = []


def remember(message):
    seen.append(message)


def record_sync(message):
    calls.append(("record_sync", message))


def record_other(message):
    calls.append(("record_other", message))


def failing_handler(message):
    calls.append(("failing_handler", message))
    raise RuntimeError("handler exploded")


def async_record(message):
    calls.append(("async_record", message))


def async_record_too(message):
    calls.append(("async_record_too", message))


def async_failing(message):
    raise RuntimeError("async handler exploded")


def async_publish_follow_up(message):
    calls.append(("async_publish_follow_up", message))
    get_message_broker().publish(FollowUp(origin=message.message_id))


def async_on_follow_up(message):
    calls.append(("async_on_follow_up", message))


def even(message) -> bool:
    return message.number % 2 == 0


def never(message) -> bool:
    return False


def exploding_predicate(message) -> bool:
    raise ValueError("predicate exploded")


class HandlerHolder:
    def method(self, message):
        calls.append(("method", message))

    @staticmethod
    def static(message):
        calls.append(("static", message))


def names() -> list[str]:
    return [name for name, _ in calls]
