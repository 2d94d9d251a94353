"""Contract tests of ``tasks.messages``: Message defaults, frozenness, exact JSON round trip,
the type registry and the refusal of definitions that cannot round-trip (DESIGN.md section 4)."""

import dataclasses
import json
import types
import typing
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar, Optional

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tasks.messages import (
    Message,
    MessageDefinitionError,
    UnknownMessageShape,
    UnknownMessageType,
    message_type_for,
    registered_message_types,
)

# A handful of examples per property keeps the file at a few seconds.
few_examples = hypothesis_settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@dataclass(frozen=True)
class Scalars(Message):
    text: str
    count: int
    ratio: float
    flag: bool
    nothing: None
    ref: uuid.UUID
    at: datetime
    day: date
    amount: Decimal


@dataclass(frozen=True)
class Nested(Message):
    ids: list[int]
    refs: list[uuid.UUID]
    matrix: list[list[int]]
    prices: dict[str, Decimal]
    timeline: dict[str, list[datetime]]
    deep: dict[str, dict[str, list[date]]]
    plain_list: list
    plain_dict: dict


@dataclass(frozen=True)
class Optionals(Message):
    maybe_ref: uuid.UUID | None = None
    maybe_amount: Optional[Decimal] = None  # noqa: UP045 (the typing spelling must work too)
    maybe_at: datetime | None = None
    maybe_day: date | None = None
    maybe_text: str | None = None
    maybe_ids: list[uuid.UUID | None] | None = None
    number_or_text: int | str = 0


@dataclass(frozen=True)
class Renamed(Message):
    message_name = "contract.renamed.v1"
    value: int


@dataclass(frozen=True)
class Parent(Message):
    parent_id: int


@dataclass(frozen=True)
class Child(Parent):
    child_id: int


def through_json(message: Message) -> Message:
    """What production does: to_json, a real JSON string, from_json."""
    return Message.from_json(json.loads(json.dumps(message.to_json())))


def assert_exact(got: Any, expected: Any) -> None:
    """Equal, and of the same type all the way down (True is not 1, Decimal("1.10") is not "1.1")."""
    assert type(got) is type(expected), (got, expected)
    if isinstance(expected, Decimal):
        assert str(got) == str(expected)
    elif isinstance(expected, float):
        assert repr(got) == repr(expected)
    elif isinstance(expected, datetime):
        assert got == expected
        assert got.utcoffset() == expected.utcoffset()
        assert got.replace(tzinfo=None) == expected.replace(tzinfo=None)
    elif isinstance(expected, list):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert_exact(g, e)
    elif isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_exact(got[key], expected[key])
    elif dataclasses.is_dataclass(expected):
        for f in dataclasses.fields(expected):
            assert_exact(getattr(got, f.name), getattr(expected, f.name))
    else:
        assert got == expected


# --- defaults, keyword-only, frozen -------------------------------------------------------------


def test_message_id_is_a_fresh_uuid4_when_not_given():
    first, second = Parent(parent_id=1), Parent(parent_id=1)
    assert isinstance(first.message_id, uuid.UUID)
    assert first.message_id.version == 4
    assert first.message_id != second.message_id


def test_occurred_at_is_aware_utc_now_when_not_given():
    before = datetime.now(UTC)
    message = Parent(parent_id=1)
    after = datetime.now(UTC)
    assert message.occurred_at.tzinfo is not None
    assert message.occurred_at.utcoffset() == timedelta(0)
    assert before <= message.occurred_at <= after


def test_message_id_and_occurred_at_are_keyword_only():
    fields = {f.name: f for f in dataclasses.fields(Parent)}
    assert fields["message_id"].kw_only
    assert fields["occurred_at"].kw_only
    with pytest.raises(TypeError):
        Parent(1, uuid.uuid4())  # type: ignore[misc]
    given_id, given_at = uuid.uuid4(), datetime(2024, 5, 1, 12, tzinfo=UTC)
    message = Parent(1, message_id=given_id, occurred_at=given_at)
    assert (message.parent_id, message.message_id, message.occurred_at) == (1, given_id, given_at)


def test_subclass_fields_without_defaults_follow_the_defaulted_base_fields():
    message = Child(parent_id=1, child_id=2)
    assert [f.name for f in dataclasses.fields(message) if not f.kw_only] == ["parent_id", "child_id"]


def test_assignment_raises_because_messages_are_frozen():
    message = Parent(parent_id=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.parent_id = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.message_id = uuid.uuid4()  # type: ignore[misc]
    assert message.parent_id == 1


# --- JSON round trip --------------------------------------------------------------------------------


def test_json_form_names_the_type_and_carries_every_field():
    message = Parent(parent_id=7)
    payload = json.loads(json.dumps(message.to_json()))
    assert payload["type"] == "tests.tasks.test_messages.Parent"
    assert payload["data"]["parent_id"] == 7
    assert payload["data"]["message_id"] == str(message.message_id)
    assert datetime.fromisoformat(payload["data"]["occurred_at"]) == message.occurred_at


def test_round_trip_is_exact_for_every_scalar_type():
    message = Scalars(
        text='héllo \u2603 "quoted"\n',
        count=2**70,
        ratio=0.1,
        flag=True,
        nothing=None,
        ref=uuid.uuid4(),
        at=datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        day=date(1999, 12, 31),
        amount=Decimal("1.10"),
    )
    back = through_json(message)
    assert back == message
    assert_exact(back, message)
    assert str(back.amount) == "1.10"
    assert back.flag is True
    assert back.at.utcoffset() == timedelta(hours=5, minutes=30)


def test_round_trip_keeps_int_and_bool_apart_and_float_a_float():
    message = Scalars(
        text="",
        count=1,
        ratio=1.0,
        flag=False,
        nothing=None,
        ref=uuid.uuid4(),
        at=datetime(2024, 1, 1, tzinfo=UTC),
        day=date(2024, 1, 1),
        amount=Decimal("-0.000"),
    )
    back = through_json(message)
    assert type(back.count) is int
    assert type(back.ratio) is float
    assert back.flag is False
    assert str(back.amount) == "-0.000"


def test_round_trip_is_exact_for_nested_lists_and_dicts():
    message = Nested(
        ids=[1, 2, 3],
        refs=[uuid.uuid4(), uuid.uuid4()],
        matrix=[[1], [], [2, 3]],
        prices={"a": Decimal("1.10"), "b": Decimal("100")},
        timeline={"t": [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)]},
        deep={"x": {"y": [date(2020, 1, 1)]}, "empty": {}},
        plain_list=[1, "two", None, True, 2.5],
        plain_dict={"k": [1, {"n": None}]},
    )
    back = through_json(message)
    assert back == message
    assert_exact(back, message)


def test_round_trip_is_exact_for_optional_fields_both_empty_and_filled():
    empty = Optionals()
    filled = Optionals(
        maybe_ref=uuid.uuid4(),
        maybe_amount=Decimal("3.14159"),
        maybe_at=datetime(2030, 6, 1, 0, 0, tzinfo=UTC),
        maybe_day=date(2030, 6, 1),
        maybe_text="x",
        maybe_ids=[uuid.uuid4(), None],
        number_or_text="7",
    )
    for message in (empty, filled):
        back = through_json(message)
        assert back == message
        assert_exact(back, message)
    assert through_json(Optionals(number_or_text=7)).number_or_text == 7


def test_from_json_of_a_subclass_rebuilds_the_subclass():
    child = Child(parent_id=1, child_id=2)
    assert type(Parent.from_json(child.to_json())) is Child
    assert type(Message.from_json(child.to_json())) is Child
    with pytest.raises(TypeError):
        Child.from_json(Parent(parent_id=1).to_json())


aware_or_naive = st.sampled_from([None, UTC, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=45))])
decimals = st.decimals(allow_nan=False, allow_infinity=False)
floats = st.floats(allow_nan=False, allow_infinity=False)


@few_examples
@given(
    text=st.text(),
    count=st.integers(),
    ratio=floats,
    flag=st.booleans(),
    ref=st.uuids(),
    at=st.datetimes(timezones=aware_or_naive),
    day=st.dates(),
    amount=decimals,
    message_id=st.uuids(version=4),
    occurred_at=st.datetimes(timezones=st.just(UTC)),
)
def test_round_trip_is_exact_for_any_scalar_values(**values):
    message = Scalars(nothing=None, **values)
    assert_exact(through_json(message), message)


@few_examples
@given(
    ids=st.lists(st.integers(), max_size=4),
    refs=st.lists(st.uuids(), max_size=3),
    matrix=st.lists(st.lists(st.integers(), max_size=3), max_size=3),
    prices=st.dictionaries(st.text(max_size=5), decimals, max_size=3),
    timeline=st.dictionaries(st.text(max_size=5), st.lists(st.datetimes(timezones=aware_or_naive), max_size=2)),
    deep=st.dictionaries(st.text(max_size=3), st.dictionaries(st.text(max_size=3), st.lists(st.dates(), max_size=2))),
    plain_list=st.lists(st.none() | st.booleans() | st.integers() | floats | st.text(max_size=5), max_size=4),
    plain_dict=st.dictionaries(st.text(max_size=5), st.none() | st.integers() | st.text(max_size=5), max_size=3),
)
def test_round_trip_is_exact_for_any_nested_values(**values):
    message = Nested(**values)
    assert_exact(through_json(message), message)


@few_examples
@given(
    maybe_ref=st.none() | st.uuids(),
    maybe_amount=st.none() | decimals,
    maybe_at=st.none() | st.datetimes(timezones=aware_or_naive),
    maybe_day=st.none() | st.dates(),
    maybe_text=st.none() | st.text(max_size=10),
    maybe_ids=st.none() | st.lists(st.none() | st.uuids(), max_size=3),
    number_or_text=st.integers() | st.text(max_size=5),
)
def test_round_trip_is_exact_for_any_optional_values(**values):
    message = Optionals(**values)
    assert_exact(through_json(message), message)


json_native = st.recursive(
    st.none() | st.booleans() | st.integers() | floats | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
SCALAR_STRATEGIES = {
    type(None): st.none(),
    str: st.text(max_size=20),
    int: st.integers(),
    float: floats,
    bool: st.booleans(),
    uuid.UUID: st.uuids(),
    datetime: st.datetimes(timezones=aware_or_naive),
    date: st.dates(),
    Decimal: decimals,
    list: st.lists(json_native, max_size=3),
    dict: st.dictionaries(st.text(max_size=5), json_native, max_size=3),
}


def strategy_for(annotation: Any) -> st.SearchStrategy:
    """Values of any field type a Message accepts."""
    if annotation in SCALAR_STRATEGIES:
        return SCALAR_STRATEGIES[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=5), strategy_for(args[1]), max_size=3)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(arg) for arg in args))
    raise AssertionError(f"no strategy for {annotation!r}: a Message accepted a type this test does not know")


def message_strategy(message_type: type[Message]) -> st.SearchStrategy:
    hints = typing.get_type_hints(message_type)
    fields = {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(message_type) if f.init}
    return st.builds(message_type, **fields)


# Production types (every marketplace event, loaded at app start) and this module's own.
ROUND_TRIP_TYPES = sorted(
    name
    for name, message_type in registered_message_types().items()
    if not message_type.__module__.startswith("tests.") or message_type.__module__ == __name__
)


def test_every_marketplace_event_is_registered():
    assert any(name.startswith("marketplace.") for name in ROUND_TRIP_TYPES)


@pytest.mark.parametrize("name", ROUND_TRIP_TYPES)
@hypothesis_settings(max_examples=15, deadline=None, database=None)
@given(data=st.data())
def test_every_registered_message_type_round_trips_exactly(name, data):
    message = data.draw(message_strategy(message_type_for(name)))
    assert_exact(through_json(message), message)


# --- registry ----------------------------------------------------------------------------------------


def test_registry_finds_a_type_by_module_and_qualname():
    assert Parent.message_name == "tests.tasks.test_messages.Parent"
    assert message_type_for("tests.tasks.test_messages.Parent") is Parent
    assert message_type_for("tests.tasks.test_messages.Child") is Child
    assert registered_message_types()["tests.tasks.test_messages.Scalars"] is Scalars


def test_registry_uses_a_class_level_message_name_override():
    assert Renamed.message_name == "contract.renamed.v1"
    assert message_type_for("contract.renamed.v1") is Renamed
    assert "tests.tasks.test_messages.Renamed" not in registered_message_types()
    message = Renamed(value=3)
    assert message.to_json()["type"] == "contract.renamed.v1"
    assert through_json(message) == message
    assert "message_name" not in {f.name for f in dataclasses.fields(Renamed)}


def test_a_subclass_of_a_renamed_type_gets_its_own_name():
    @dataclass(frozen=True)
    class RenamedChild(Renamed):
        extra: int = 0

    assert RenamedChild.message_name.endswith("RenamedChild")
    assert message_type_for(RenamedChild.message_name) is RenamedChild
    assert message_type_for("contract.renamed.v1") is Renamed


def test_message_type_for_an_unknown_name_raises_unknown_message_type():
    with pytest.raises(UnknownMessageType):
        message_type_for("no.such.Message")
    with pytest.raises(UnknownMessageType):
        Message.from_json({"type": "no.such.Message", "data": {}})
    assert issubclass(UnknownMessageType, LookupError)


def test_a_second_class_cannot_take_a_name_already_registered():
    with pytest.raises(MessageDefinitionError, match=r"contract\.renamed\.v1"):

        @dataclass(frozen=True)
        class Impostor(Message):
            message_name = "contract.renamed.v1"
            other: str

    assert message_type_for("contract.renamed.v1") is Renamed


# --- definitions refused ----------------------------------------------------------------------------


def test_a_subclass_that_is_not_frozen_is_refused_at_class_creation():
    with pytest.raises(TypeError, match="frozen"):

        @dataclass
        class Mutable(Message):
            value: int

    with pytest.raises(TypeError, match="frozen"):

        @dataclass(frozen=False)
        class AlsoMutable(Message):
            value: int


@pytest.mark.parametrize(
    "annotation",
    [
        set[int],
        frozenset[str],
        tuple[int, int],
        tuple,
        set,
        dict[int, str],
        dict[uuid.UUID, int],
        uuid.UUID | str,
        Decimal | float,
        datetime | str,
        list[set[int]],
        dict[str, tuple[int]],
        list[uuid.UUID | str] | None,
        Any,
        object,
        bytes,
        complex,
    ],
    ids=repr,
)
def test_a_field_type_that_cannot_round_trip_is_refused_at_class_creation(annotation):
    namespace: dict[str, Any] = {"__annotations__": {"value": annotation}, "__module__": __name__}
    with pytest.raises(MessageDefinitionError):
        dataclass(frozen=True)(type("Refused", (Message,), namespace))
    assert f"{__name__}.Refused" not in registered_message_types()


def test_a_custom_class_field_is_refused_with_a_clear_error():
    class Money:
        pass

    with pytest.raises(MessageDefinitionError, match=r"price.*cannot round-trip"):

        @dataclass(frozen=True)
        class Priced(Message):
            price: Money


def test_a_dict_with_non_str_keys_is_refused_with_a_clear_error():
    with pytest.raises(MessageDefinitionError, match="keys must be str"):

        @dataclass(frozen=True)
        class ByNumber(Message):
            names: dict[int, str]


def test_an_undecorated_subclass_is_refused_at_instantiation():
    class Undecorated(Parent):
        pass

    with pytest.raises(MessageDefinitionError, match="dataclass"):
        Undecorated(parent_id=1)


def test_message_definition_error_is_a_type_error():
    assert issubclass(MessageDefinitionError, TypeError)


def test_a_bare_dict_field_either_is_refused_or_round_trips_a_decimal_exactly():
    """A bare ``dict`` says nothing of its items; a Decimal or UUID inside must not silently come
    back as a str."""
    try:

        @dataclass(frozen=True)
        class Loose(Message):
            extra: dict

    except MessageDefinitionError:
        return  # refused at class creation: the contract holds
    try:
        message = Loose(extra={"amount": Decimal("1.10"), "ref": uuid.uuid4()})
        back = through_json(message)
    except (TypeError, ValueError, MessageDefinitionError):
        return  # refused when used: the contract holds
    assert_exact(back, message)


def test_a_bare_list_or_dict_field_still_round_trips_json_native_values():
    @dataclass(frozen=True)
    class LooseButNative(Message):
        extra: dict
        items: list | None = None

    message = LooseButNative(extra={"a": [1, 2.5, "x", None, True], "b": {"c": False}}, items=[1, "two"])
    assert_exact(through_json(message), message)


# --- evolution: payloads written by older (or newer) code (issue 14 item 3) -----------------------


@dataclass(frozen=True)
class PriceChanged(Message):
    """Version 1 had ``amount`` (cents, int) and ``cur``; version 2 has ``price`` and ``currency``."""

    schema_version: ClassVar[int] = 2
    price: Decimal
    currency: str
    reason: str = ""  # added later, with a default: no version change

    @classmethod
    def upgrade(cls, data: dict, from_version: int) -> dict:
        if from_version == 1:
            data["price"] = str(Decimal(data.pop("amount")) / 100)
            data["currency"] = data.pop("cur")
        return data


def test_a_payload_without_a_field_added_since_loads_with_its_default():
    old = {"type": PriceChanged.message_name, "schema_version": 2, "data": {"price": "1.50", "currency": "EUR"}}
    assert Message.from_json(old).reason == ""


def test_an_old_version_is_upgraded_by_the_class_when_a_field_was_renamed():
    message_id = uuid.uuid4()
    old = {"type": PriceChanged.message_name, "data": {"amount": 150, "cur": "EUR", "message_id": str(message_id)}}
    loaded = Message.from_json(old)
    assert (loaded.price, loaded.currency, loaded.message_id) == (Decimal("1.5"), "EUR", message_id)


def test_the_version_travels_in_the_payload_only_when_it_is_above_one():
    assert PriceChanged(price=Decimal("1"), currency="EUR").to_json()["schema_version"] == 2
    assert set(Parent(parent_id=1).to_json()) == {"type", "data"}


@pytest.mark.parametrize(
    "payload",
    [
        {"type": None, "schema_version": 2, "data": {"price": "1", "currency": "EUR", "discount": "0.1"}},
        {"type": None, "schema_version": 3, "data": {"price": "1", "currency": "EUR"}},
        {"type": None, "schema_version": 1, "data": {"amount": 1, "cur": "EUR", "rate": 2}},
    ],
    ids=["unknown field", "newer version", "unknown field after the upgrade"],
)
def test_a_payload_from_newer_code_is_refused_not_silently_dropped(payload):
    payload["type"] = PriceChanged.message_name
    with pytest.raises(UnknownMessageShape):
        Message.from_json(payload)
    assert issubclass(UnknownMessageShape, UnknownMessageType)  # "unknown type": the deploy window


def test_a_version_without_an_upgrade_step_is_refused_when_the_class_declares_none():
    @dataclass(frozen=True)
    class Bumped(Message):
        schema_version: ClassVar[int] = 2
        name: str

    with pytest.raises(UnknownMessageShape, match="no upgrade from version 1"):
        Message.from_json({"type": Bumped.message_name, "data": {"name": "x"}})


@pytest.mark.parametrize("version", [0, "2", True, None])
def test_a_malformed_version_is_refused(version):
    with pytest.raises(ValueError, match="bad version"):
        Message.from_json({"type": PriceChanged.message_name, "schema_version": version, "data": {}})
