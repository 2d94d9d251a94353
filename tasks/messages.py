"""Public API: domain events. ``Message``, the base of frozen dataclasses, its JSON form and type registry.

A subclass is checked when its ``@dataclass(frozen=True)`` decorator has run: it must be frozen
(Python itself refuses a non-frozen dataclass below a frozen one) and every field type must
survive a JSON round trip exactly. The stable name of a type is ``module.QualName`` unless the
class sets ``message_name``; that name travels with every serialised message.

Evolution (payloads in the outbox, on the broker and in dead letters outlive the code that
wrote them):

- Add a field with a default: old payloads load with the default. No version change.
- Rename or remove a field, or change its meaning: raise the class's ``schema_version`` and declare
  ``upgrade(data, from_version)``, which turns an older payload's data into the current shape.
  A payload records its ``schema_version`` when it is above 1 (a field may be called ``version``).
- A payload with a field the class does not have, or a newer version than the class, was
  written by newer code (or is wrong): ``from_json`` refuses it (``UnknownMessageShape``)
  instead of dropping data; a worker retries it for the deploy window, as an unknown type.

Streams (``tasks.streams``): a class opts in to being appended to an external stream by naming it,
``stream = "marketplace.components"``, and the field that holds the aggregate id entries are
ordered by, ``stream_key = "component_id"``. The relay appends every committed event of the class.
"""

from __future__ import annotations

import abc
import dataclasses
import re
import types
import typing
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar

SCALARS: tuple[type, ...] = (str, int, float, bool, uuid.UUID, datetime, date, Decimal)
JSON_NATIVE: tuple[type, ...] = (str, int, float, bool)

__all__ = [
    "Message",
    "MessageDefinitionError",
    "UnknownMessageShape",
    "UnknownMessageType",
    "message_type_for",
    "registered_message_types",
]

_registry: dict[str, type[Message]] = {}
# A stream name is also a Redis key, an AMQP routing-key prefix and a Kafka topic: dotted words.
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+")


class MessageDefinitionError(TypeError):
    """A Message subclass that cannot be serialised exactly."""


class UnknownMessageType(LookupError):
    """A serialised message names a type that no loaded module defines."""


class UnknownMessageShape(UnknownMessageType):
    """A serialised message of a known type has fields, or a version, this code does not know."""


def _check_type(tp: Any, where: str) -> None:
    """Refuse a field type whose values would not come back from JSON as they went in."""
    if tp is type(None) or tp in SCALARS or tp in (list, dict):
        return
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list:
        for arg in args:
            _check_type(arg, where)
        return
    if origin is dict:
        if args and args[0] is not str:
            raise MessageDefinitionError(f"{where}: dict keys must be str for JSON, not {args[0]!r}")
        for arg in args[1:]:
            _check_type(arg, where)
        return
    if origin in (typing.Union, types.UnionType):
        concrete = [a for a in args if a is not type(None)]
        # int | str survives JSON (each comes back as itself); UUID | str would not.
        if len(concrete) > 1 and not all(a in JSON_NATIVE for a in concrete):
            raise MessageDefinitionError(f"{where}: the union {tp!r} cannot be told apart after JSON")
        for arg in concrete:
            _check_type(arg, where)
        return
    raise MessageDefinitionError(
        f"{where}: type {tp!r} cannot round-trip through JSON; use str, int, float, bool, None, "
        "UUID, datetime, date, Decimal, list[...] or dict[str, ...]"
    )


class _MessageMeta(abc.ABCMeta):
    """Validates and registers a Message subclass once ``@dataclass`` has finished with it.

    ``dataclass`` ends by calling ``abc.update_abstractmethods(cls)``, which assigns
    ``__abstractmethods__``: the first moment the fields are known, still inside the class
    statement, so a bad definition fails where it is written.
    """

    def __setattr__(cls, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "__abstractmethods__" and "__dataclass_fields__" in cls.__dict__ and cls.__bases__ != (object,):
            _validate_and_register(cls)


def _validate_and_register(cls: type[Message]) -> None:
    if not cls.__dataclass_params__.frozen:
        raise MessageDefinitionError(f"{cls.__qualname__} must be declared with @dataclass(frozen=True)")
    try:
        hints = typing.get_type_hints(cls)
    except NameError as exc:
        raise MessageDefinitionError(f"{cls.__qualname__}: cannot resolve a field type: {exc}") from exc
    for f in dataclasses.fields(cls):
        _check_type(hints[f.name], f"{cls.__qualname__}.{f.name}")
    cls._field_types = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    cls._untyped_fields = tuple(name for name, tp in cls._field_types.items() if _has_untyped_container(tp))
    name = cls.__dict__.get("message_name") or f"{cls.__module__}.{cls.__qualname__}"
    cls.message_name = name
    _check_stream_opt_in(cls)
    existing = _registry.get(name)
    if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
        raise MessageDefinitionError(f"message name {name!r} is used by {existing!r} already")
    # The same class defined again (a re-imported module, a test) replaces the old one.
    _registry[name] = cls


def _check_stream_opt_in(cls: type[Message]) -> None:
    """A streamed class names its stream (``family.topic``) and a field of its own as the key."""
    if cls.stream is None:
        return
    if not isinstance(cls.stream, str) or not _STREAM_NAME.fullmatch(cls.stream):
        raise MessageDefinitionError(
            f"{cls.__qualname__}.stream must look like 'family.topic' (letters, digits, _ and -), not {cls.stream!r}"
        )
    if cls.stream_key not in cls._field_types:
        raise MessageDefinitionError(
            f"{cls.__qualname__}.stream_key must name one of its fields (the aggregate id), not {cls.stream_key!r}"
        )


def _has_untyped_container(tp: Any) -> bool:
    if tp in (list, dict):
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, dict, typing.Union, types.UnionType):
        return any(_has_untyped_container(a) for a in args)
    return False


def _is_json_native(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list):
        return all(_is_json_native(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_native(v) for k, v in value.items())
    return False


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Message(metaclass=_MessageMeta):
    """Base of every domain event: a frozen dataclass of IDs and small facts.

    ``message_id`` and ``occurred_at`` are keyword-only with defaults, so subclasses declare
    their own fields freely. Events carry IDs, never model instances.
    """

    message_name: ClassVar[str]
    # The payload shape; raise it (and declare ``upgrade``) when a field is renamed or removed.
    schema_version: ClassVar[int] = 1
    # Opt-in to an external stream (tasks.streams): its name, and the field holding the aggregate
    # id (the stream keeps commit order per value of that field).
    stream: ClassVar[str | None] = None
    stream_key: ClassVar[str | None] = None
    _field_types: ClassVar[dict[str, Any]]
    _untyped_fields: ClassVar[tuple[str, ...]] = ()

    message_id: uuid.UUID = field(default_factory=uuid.uuid4, kw_only=True)
    occurred_at: datetime = field(default_factory=_utcnow, kw_only=True)

    def __post_init__(self) -> None:
        cls = type(self)
        if "__dataclass_fields__" not in cls.__dict__:
            raise MessageDefinitionError(f"{cls.__qualname__} must be declared with @dataclass(frozen=True)")
        # A bare list or dict says nothing of its items, so only JSON's own types may be inside.
        for name in cls._untyped_fields:
            if not _is_json_native(getattr(self, name)):
                raise TypeError(
                    f"{cls.__qualname__}.{name}: an untyped list/dict may hold only str, int, float, bool, "
                    f"None, lists and str-keyed dicts; annotate the items (e.g. dict[str, Decimal]) instead"
                )

    def describe(self) -> str:
        """What this message is, in operators' lists (the status page's dead letters)."""
        return self.message_name

    def delivery_queue(self) -> str | None:
        """The queue this message's deliveries go to instead of their subscriptions' (None: theirs).

        For a message that is itself a request for work on a chosen queue (a Django task).
        """
        return None

    def delivery_priority(self) -> int | None:
        """The broker priority (0..9, higher first) of this message's deliveries; None: none."""
        return None

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready form: ``{"type": name, "data": {field: value}}``."""
        data = {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}
        payload: dict[str, Any] = {"type": self.message_name, "data": data}
        if self.schema_version != 1:  # 1 stays the unversioned shape every older payload has
            payload["schema_version"] = self.schema_version
        return payload

    @classmethod
    def upgrade(cls, data: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Turn ``data`` of an older payload (``from_version``) into this version's field names.

        A class that raises ``schema_version`` overrides this; the base knows no older shape.
        """
        raise UnknownMessageShape(
            f"{cls.message_name} version {cls.schema_version} declares no upgrade from version {from_version}"
        )

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Message:
        """Rebuild the message ``to_json`` produced; the type comes from the registry."""
        message_type = message_type_for(payload["type"])
        if cls is not Message and not issubclass(message_type, cls):
            raise TypeError(f"{payload['type']} is not a {cls.__qualname__}")
        types_ = message_type._field_types
        data = payload["data"]
        if not isinstance(data, dict):
            raise TypeError(f"{payload['type']}: data must be an object, not {type(data).__name__}")
        version = payload.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"{payload['type']}: bad version {version!r}")
        if version > message_type.schema_version:
            raise UnknownMessageShape(
                f"{payload['type']} version {version} is newer than this code's {message_type.schema_version}"
            )
        if version < message_type.schema_version:
            data = message_type.upgrade(dict(data), version)
        unknown = sorted(set(data) - set(types_))
        if unknown:
            raise UnknownMessageShape(f"{payload['type']} has fields this code does not know: {', '.join(unknown)}")
        return message_type(**{name: _decode(types_[name], value) for name, value in data.items()})


def message_type_for(name: str) -> type[Message]:
    """The Message class registered under ``name``; UnknownMessageType if there is none."""
    try:
        return _registry[name]
    except KeyError:
        raise UnknownMessageType(f"unknown message type {name!r}") from None


def registered_message_types() -> dict[str, type[Message]]:
    """Every registered message type by its stable name."""
    return dict(_registry)


def _encode(value: Any) -> Any:
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def _decode(tp: Any, value: Any) -> Any:  # noqa: PLR0911 (one return per supported type)
    if value is None:
        return None
    if tp is uuid.UUID:
        return uuid.UUID(value)
    if tp is datetime:
        return datetime.fromisoformat(value)
    if tp is date:
        return date.fromisoformat(value)
    if tp is Decimal:
        return Decimal(value)
    if tp is float:
        return float(value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return [_decode(args[0], v) for v in value] if args else value
    if origin is dict:
        return {k: _decode(args[1], v) for k, v in value.items()} if args else value
    if origin in (typing.Union, types.UnionType):
        concrete = [a for a in args if a is not type(None)]
        return _decode(concrete[0], value) if len(concrete) == 1 else value
    return value
