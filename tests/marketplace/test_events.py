"""Marketplace events: exact JSON round trip, and IDs and small facts only."""

import dataclasses
import json
import types
import typing
import uuid
from datetime import datetime

import pytest

from marketplace import events
from tasks.messages import Message, message_type_for

EXPECTED_EVENTS = {
    "ComponentUploaded",
    "ComponentPublished",
    "ComponentRejected",
    "ComponentDeleted",
    "ComponentRated",
    "ComponentDownloaded",
    "NotificationRequested",
}
BASE_FIELDS = {"message_id", "occurred_at"}
SMALL_FACT_TYPES = {int, str, type(None)}

EVENT_TYPES = sorted(
    (
        obj
        for obj in vars(events).values()
        if isinstance(obj, type) and issubclass(obj, Message) and obj.__module__ == events.__name__
    ),
    key=lambda cls: cls.__name__,
)


def _sample_value(tp, n: int):
    """A distinctive value of a field type: 1000+n for ints, a non-ASCII string for strs."""
    if tp is int:
        return 1000 + n
    if tp is str:
        return f'fact {n}: é ✓ "quoted"\nsecond line'
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        concrete = [a for a in typing.get_args(tp) if a is not type(None)]
        return _sample_value(concrete[0], n)
    raise AssertionError(f"no sample for {tp!r}")


def _sample(cls: type[Message]) -> Message:
    hints = typing.get_type_hints(cls)
    own = [f for f in dataclasses.fields(cls) if f.name not in BASE_FIELDS]
    return cls(**{f.name: _sample_value(hints[f.name], i) for i, f in enumerate(own)})


def _round_trip(message: Message) -> Message:
    return Message.from_json(json.loads(json.dumps(message.to_json())))


def _leaf_types(tp) -> set:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return set(typing.get_args(tp))
    return {tp}


def test_module_defines_every_event_of_the_marketplace_flow():
    assert {cls.__name__ for cls in EVENT_TYPES} == EXPECTED_EVENTS


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_event_round_trips_exactly_through_json(event_type):
    original = _sample(event_type)

    restored = _round_trip(original)

    assert type(restored) is event_type
    assert restored == original
    assert restored.message_id == original.message_id
    assert restored.occurred_at == original.occurred_at
    assert restored.occurred_at.tzinfo is not None
    for f in dataclasses.fields(event_type):
        assert type(getattr(restored, f.name)) is type(getattr(original, f.name)), f.name


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_event_carries_only_ids_and_small_facts(event_type):
    hints = typing.get_type_hints(event_type)
    own = {f.name: hints[f.name] for f in dataclasses.fields(event_type) if f.name not in BASE_FIELDS}

    assert own, "an event without fields of its own carries nothing"
    for name, tp in own.items():
        assert _leaf_types(tp) <= SMALL_FACT_TYPES, f"{event_type.__name__}.{name} is {tp!r}"
    assert hints["message_id"] is uuid.UUID
    assert hints["occurred_at"] is datetime


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_event_is_registered_under_its_stable_name(event_type):
    assert event_type.message_name == f"marketplace.events.{event_type.__name__}"
    assert message_type_for(event_type.message_name) is event_type


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_event_is_frozen(event_type):
    event = _sample(event_type)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.message_id = uuid.uuid4()


@pytest.mark.parametrize("user_id", [None, 42])
def test_component_downloaded_round_trips_when_user_is_anonymous_or_known(user_id):
    original = events.ComponentDownloaded(component_id=7, user_id=user_id)

    restored = _round_trip(original)

    assert restored == original
    assert restored.user_id == user_id


def test_round_trip_keeps_two_events_with_equal_facts_distinct():
    first = events.ComponentUploaded(component_id=1, author_id=2)
    second = events.ComponentUploaded(component_id=1, author_id=2)

    assert first != second
    assert _round_trip(first) == first
    assert _round_trip(first) != second


def test_serialised_event_names_its_type_and_holds_plain_json():
    event = events.ComponentRated(component_id=3, author_id=4, user_id=5, score=5)

    payload = json.loads(json.dumps(event.to_json()))

    assert payload["type"] == "marketplace.events.ComponentRated"
    assert payload["data"] == {
        "component_id": 3,
        "author_id": 4,
        "user_id": 5,
        "score": 5,
        "message_id": str(event.message_id),
        "occurred_at": event.occurred_at.isoformat(),
    }
