"""Sequencing: committed events of streamed classes get their stream positions, once, in the
order the relay sees them committed; the cursor passes a row only once no writer can still
commit a lower id."""

import json
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.db import transaction

from tasks.messages import Message, MessageDefinitionError
from tasks.models import StreamCursor, StreamEntry
from tasks.streams.sequencing import CURSOR_NAME, stream_events_sequence, streamed_types
from tasks.transaction import register_event
from tests.support.connections import other_connection
from tests.support.streams import STREAM, StreamedItem

pytestmark = pytest.mark.django_db(transaction=True)


def positions() -> list[tuple[str, int, str]]:
    return list(StreamEntry.objects.order_by("position").values_list("key", "position", "message_type"))


def test_streamed_types_are_the_classes_that_name_a_stream():
    types = streamed_types()
    assert types[StreamedItem.message_name] is StreamedItem
    assert types["marketplace.events.ComponentRated"].stream == "marketplace.components"
    assert "marketplace.events.NotificationRequested" not in types


def test_committed_events_get_positions_in_commit_order_once_when_sequenced_again():
    for n in range(3):
        register_event(StreamedItem(item_key=f"k{n % 2}", n=n))

    assert stream_events_sequence() == 3
    assert stream_events_sequence() == 0

    assert positions() == [("k0", 1, StreamedItem.message_name), ("k1", 2, StreamedItem.message_name),
                           ("k0", 3, StreamedItem.message_name)]  # fmt: skip
    ids = list(StreamEntry.objects.order_by("position").values_list("entry_id", flat=True))
    as_tuples = [tuple(int(part) for part in i.split("-")) for i in ids]
    assert as_tuples == sorted(as_tuples) and len(set(as_tuples)) == 3
    assert set(StreamEntry.objects.values_list("stream", flat=True)) == {STREAM}


def test_an_event_rolled_back_is_never_sequenced():
    with pytest.raises(RuntimeError), transaction.atomic():
        register_event(StreamedItem(item_key="gone", n=1))
        raise RuntimeError("rollback")

    assert stream_events_sequence() == 0


@pytest.mark.skipif("sqlite" in settings.DATABASES["default"]["ENGINE"], reason="one writer at a time on SQLite")
def test_a_lower_id_committed_late_is_sequenced_after_the_cursor_waited_for_its_writer():
    late = StreamedItem(item_key="k", n=2)
    with other_connection() as other:
        other.set_autocommit(False)
        with other.cursor() as cursor:
            # A slow writer: its outbox row takes the lower id and commits last.
            cursor.execute(
                "INSERT INTO tasks_outbox (message_id, message_type, payload, created_at, attempts, last_error) "
                "VALUES (%s, %s, %s, now(), 0, '') RETURNING id",
                [str(late.message_id), late.message_name, json.dumps(late.to_json())],
            )
            late_id = cursor.fetchone()[0]
        register_event(StreamedItem(item_key="other", n=1))
        assert stream_events_sequence() == 1
        stream_events_sequence()  # the candidate waits for the slow writer, still open
        assert StreamCursor.objects.get(name=CURSOR_NAME).outbox_id < late_id
        other.commit()

    assert stream_events_sequence() == 1
    assert [key for key, _, _ in positions()] == ["other", "k"]
    stream_events_sequence()
    assert StreamCursor.objects.get(name=CURSOR_NAME).outbox_id >= late_id


def test_a_streamed_class_must_name_a_dotted_stream_and_one_of_its_fields_as_key():
    with pytest.raises(MessageDefinitionError, match=r"family\.topic"):

        @dataclass(frozen=True)
        class NoFamily(Message):
            stream = "components"
            stream_key = "item_id"
            item_id: int

    with pytest.raises(MessageDefinitionError, match="stream_key must name one of its fields"):

        @dataclass(frozen=True)
        class NoKey(Message):
            stream = "tests.items"
            stream_key = "component_id"
            item_id: int
