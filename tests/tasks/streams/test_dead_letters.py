"""Dead-lettered stream entries: listed per stream and group from the consumer library's dead-letter streams."""

from __future__ import annotations

import uuid

from tasks.streams.consumer import RedisStreamConsumer
from tasks.streams.dead_letters import stream_dead_letters
from tests.support.streams import STREAM, fields


def poison(event) -> None:
    raise ValueError(f"poison {event.message_id}")


def test_an_entry_the_consumer_gave_up_on_is_listed_with_its_group_error_and_deliveries(redis_client):
    consumer = RedisStreamConsumer(
        redis_client, stream=STREAM, group="search", consumer="search-1", handler=poison, max_deliveries=1, block=0.01
    )
    consumer.ensure_group()
    message_id = str(uuid.uuid4())
    redis_client.xadd(STREAM, fields(key="k1", message_id=message_id))
    consumer.poll()

    [dead] = stream_dead_letters(client=redis_client)

    assert (dead.stream, dead.group, dead.message_id, dead.type, dead.key, dead.deliveries) == (
        STREAM, "search", message_id, "tests.Item", "k1", 1,
    )  # fmt: skip
    assert f"poison {message_id}" in dead.error and dead.dead_at and dead.entry_id


def test_only_the_platforms_streams_are_read_and_newest_first(redis_client):
    redis_client.xadd("elsewhere:dead:search", {"message_id": "x"})
    redis_client.xadd(f"{STREAM}:dead:mail", {"message_id": "first"})
    redis_client.xadd(f"{STREAM}:dead:mail", {"message_id": "second"})

    assert [d.message_id for d in stream_dead_letters(client=redis_client)] == ["second", "first"]


def test_foreign_keys_and_odd_fields_are_tolerated(redis_client):
    redis_client.set(f"{STREAM}:dead:not-a-stream", "x")
    redis_client.xadd(f"{STREAM}:dead:odd", {"deliveries": "many", "\xff": "x"})

    [odd] = stream_dead_letters(client=redis_client)

    assert (odd.group, odd.message_id, odd.deliveries) == ("odd", "", None)
