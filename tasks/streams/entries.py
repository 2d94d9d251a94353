"""The wire form of a stream entry, shared by the sinks and the consumer library.

No Django and no ``tasks`` import: a service that consumes the streams may copy this module and
``consumer.py`` as they are. An entry has six fields, all strings on Redis (``payload`` is JSON
text there) and one JSON object as an AMQP body:

- ``message_id``: the event's UUID, the same in every copy of it (consumer idempotency key)
- ``type``: the event's stable type name, e.g. ``marketplace.events.ComponentRated``
- ``occurred_at``: ISO 8601 with a UTC offset
- ``key``: the aggregate id the stream keeps commit order for (``Message.stream_key``)
- ``payload``: the event's data, a JSON object
- ``schema_version``: the payload's shape, 1, 2, ... (``Message.schema_version``)

Entries come from a broker, so a consumer checks them (``event_from_fields``) before a handler
sees them; one that does not parse is dead-lettered at once, never retried.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

ENTRY_FIELDS = ("message_id", "type", "occurred_at", "key", "payload", "schema_version")
# Bounds on what a consumer accepts from the broker: names, keys and payloads of real events are
# far below them.
MAX_NAME_LENGTH = 200
MAX_PAYLOAD_BYTES = 1024 * 1024


class MalformedEntry(ValueError):
    """A stream entry that is not an event this protocol describes."""


@dataclass(frozen=True)
class StreamEvent:
    """One event as a consumer's handler receives it."""

    message_id: str
    type: str
    occurred_at: datetime
    key: str
    payload: dict[str, Any]
    schema_version: int
    stream: str
    entry_id: str
    deliveries: int


def entry_fields(
    *, message_id: str, type: str, occurred_at: str, key: str, payload: Mapping[str, Any], schema_version: int
) -> dict[str, str]:
    """The entry as flat string fields (a Redis stream entry)."""
    return {
        "message_id": message_id,
        "type": type,
        "occurred_at": occurred_at,
        "key": key,
        "payload": json.dumps(payload, separators=(",", ":"), sort_keys=True),
        "schema_version": str(schema_version),
    }


def _text(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError as exc:
            raise MalformedEntry(f"{name} is not UTF-8") from exc
    if not isinstance(value, str):
        raise MalformedEntry(f"{name} must be a string, not {type(value).__name__}")
    return value


def event_from_fields(fields: Mapping[Any, Any], *, stream: str, entry_id: str, deliveries: int) -> StreamEvent:
    """Check an entry's fields (str or bytes, as Redis or an AMQP body gives them) and build the event."""
    values = {_text(k, "a field name"): v for k, v in fields.items()}
    missing = [name for name in ENTRY_FIELDS if name not in values]
    if missing:
        raise MalformedEntry(f"missing fields: {', '.join(missing)}")
    message_id = _text(values["message_id"], "message_id")
    try:
        message_id = str(uuid.UUID(message_id))
    except ValueError as exc:
        raise MalformedEntry("message_id is not a UUID") from exc
    type_ = _text(values["type"], "type")
    key = _text(values["key"], "key")
    if not type_ or len(type_) > MAX_NAME_LENGTH or len(key) > MAX_NAME_LENGTH:
        raise MalformedEntry("type must be 1 to 200 characters and key at most 200")
    try:
        occurred_at = datetime.fromisoformat(_text(values["occurred_at"], "occurred_at"))
    except ValueError as exc:
        raise MalformedEntry("occurred_at is not an ISO 8601 time") from exc
    if occurred_at.tzinfo is None:
        raise MalformedEntry("occurred_at has no UTC offset")
    payload = values["payload"]
    if not isinstance(payload, dict):
        text = _text(payload, "payload")
        if len(text) > MAX_PAYLOAD_BYTES:
            raise MalformedEntry("payload is too large")
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise MalformedEntry("payload is not JSON") from exc
        if not isinstance(payload, dict):
            raise MalformedEntry("payload is not a JSON object")
    version = values["schema_version"]
    try:
        version = int(_text(version, "schema_version")) if not isinstance(version, int) else version
    except ValueError as exc:
        raise MalformedEntry("schema_version is not a number") from exc
    if isinstance(version, bool) or version < 1:
        raise MalformedEntry("schema_version must be 1 or more")
    return StreamEvent(
        message_id=message_id,
        type=type_,
        occurred_at=occurred_at,
        key=key,
        payload=payload,
        schema_version=version,
        stream=stream,
        entry_id=entry_id,
        deliveries=deliveries,
    )


def family_of(stream: str) -> str:
    """The topic family of a stream, its first dotted word: ``marketplace`` of ``marketplace.components``."""
    return stream.split(".", 1)[0]


def exchange_name(stream: str) -> str:
    """The RabbitMQ topic exchange of a stream's family."""
    return f"{family_of(stream)}.events"


def routing_key(stream: str, key: str) -> str:
    """The AMQP routing key of an entry: the stream, then the aggregate key (bind ``<stream>.#``)."""
    return f"{stream}.{key}"
