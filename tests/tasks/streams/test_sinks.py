"""The sinks: Redis appends each entry once under its own id and recognises a re-append after a
crash; RabbitMQ publishes persistent messages with the properties consumers rely on."""

import json
import uuid

import pytest
import redis
from kombu import Connection, Exchange, Queue

from tasks.models import StreamEntry
from tasks.streams.appends import stream_entries_append, stream_relay_pass
from tasks.streams.entries import exchange_name
from tasks.streams.sequencing import stream_events_sequence
from tasks.streams.sinks import RabbitMQSink, RedisStreamSink, StreamConflict, StreamSinkUnavailable
from tasks.transaction import register_event
from tests.support.streams import ON_SHARED_RABBITMQ, RABBITMQ_URL, STREAM, StreamedItem

pytestmark = [ON_SHARED_RABBITMQ, pytest.mark.django_db(transaction=True)]


def sequenced(count: int, key: str = "k") -> list[StreamEntry]:
    for n in range(count):
        register_event(StreamedItem(item_key=key, n=n))
    stream_events_sequence()
    return list(StreamEntry.objects.order_by("position"))


def stream_ns(client: redis.Redis) -> list[int]:
    return [json.loads(fields[b"payload"])["n"] for _, fields in client.xrange(STREAM)]


def test_the_relay_pass_appends_each_committed_event_once_with_the_entry_fields(redis_client):
    message = StreamedItem(item_key="item-7", n=1)
    register_event(message)

    assert stream_relay_pass() == 1
    assert stream_relay_pass() == 0

    ((entry_id, fields),) = redis_client.xrange(STREAM)
    entry = StreamEntry.objects.get()
    assert entry_id.decode() == entry.entry_id and entry.appended_at is not None
    assert {k.decode(): v.decode() for k, v in fields.items() if k != b"payload"} == {
        "message_id": str(message.message_id),
        "type": StreamedItem.message_name,
        "occurred_at": message.occurred_at.isoformat(),
        "key": "item-7",
        "schema_version": "1",
    }
    assert json.loads(fields[b"payload"])["n"] == 1


def test_a_batch_appended_again_after_a_crash_is_recognised_not_appended_twice(redis_client):
    entries = sequenced(5)
    sink = RedisStreamSink()
    sink.append(STREAM, entries[:3])  # the relay died before it recorded these as appended

    assert stream_entries_append() == 5

    assert stream_ns(redis_client) == [0, 1, 2, 3, 4]


def test_an_entry_trimmed_by_retention_since_its_append_counts_as_appended(redis_client):
    entries = sequenced(3)
    redis_client.xadd(STREAM, {"message_id": str(entries[0].message_id)}, id=entries[0].entry_id)
    redis_client.xadd(STREAM, {"message_id": str(entries[1].message_id)}, id=entries[1].entry_id)
    redis_client.xtrim(STREAM, maxlen=1, approximate=False)

    RedisStreamSink().append(STREAM, entries)

    assert [i.decode() for i, _ in redis_client.xrange(STREAM)] == [entries[1].entry_id, entries[2].entry_id]


def test_a_foreign_entry_in_the_relays_stream_is_a_conflict_not_a_silent_skip(redis_client):
    entries = sequenced(1)
    redis_client.xadd(STREAM, {"message_id": str(uuid.uuid4())}, id=entries[0].entry_id)

    with pytest.raises(StreamConflict):
        RedisStreamSink().append(STREAM, entries)


def test_a_redis_outage_leaves_entries_sequenced_and_unappended_for_the_next_pass(settings, redis_client):
    settings.STREAMS_REDIS_URL = "redis://127.0.0.1:1/0"
    register_event(StreamedItem(item_key="k", n=1))

    with pytest.raises(StreamSinkUnavailable):
        stream_relay_pass()

    assert StreamEntry.objects.get().appended_at is None


def test_rabbitmq_appends_persistent_messages_with_id_correlation_time_type_and_key_routing():
    stream = f"tests.items-{uuid.uuid4().hex[:8]}"
    exchange = Exchange(exchange_name(stream), "topic", durable=True)
    queue = Queue(f"{stream}.probe", exchange, routing_key=f"{stream}.#")
    with Connection(RABBITMQ_URL, connect_timeout=5) as conn:
        channel = conn.channel()
        queue.bind(channel).declare()
        try:
            entry = sequenced(1, key="item-9")[0]
            RabbitMQSink().append(stream, [entry])
            message = queue.bind(channel).get(no_ack=True)
            assert message is not None
            assert message.delivery_info["routing_key"] == f"{stream}.item-9"
            assert message.properties["delivery_mode"] == 2
            assert message.properties["message_id"] == str(entry.message_id)
            assert message.properties["correlation_id"] == str(entry.message_id)
            assert message.properties["timestamp"]
            assert message.content_type == "application/json"
            body = json.loads(message.body)
            assert body["key"] == "item-9" and body["payload"]["n"] == 0 and body["schema_version"] == 1
        finally:
            queue.bind(channel).delete()
            channel.close()
