"""Dead-lettered stream entries: listed per stream and group, re-appended once, handled again."""

from __future__ import annotations

import uuid

import pytest

from tasks.streams.consumer import RedisStreamConsumer
from tasks.streams.dead_letters import stream_dead_letter_reappend, stream_dead_letters
from tests.support.streams import STREAM, fields


def consumer(redis_client, group: str, handled: list, *, fail: bool) -> RedisStreamConsumer:
    def handler(event):
        if fail:
            raise ValueError(f"poison {event.message_id}")
        handled.append(event.message_id)

    found = RedisStreamConsumer(
        redis_client, stream=STREAM, group=group, consumer=f"{group}-1", handler=handler, max_deliveries=1, block=0.01
    )
    found.ensure_group()
    return found


def test_a_dead_letter_is_listed_and_once_re_appended_its_group_handles_it_while_others_skip_it(redis_client):
    handled_search: list = []
    handled_mail: list = []
    consumer(redis_client, "mail", handled_mail, fail=False)
    consumer(redis_client, "search", handled_search, fail=True)
    message_id = str(uuid.uuid4())
    redis_client.xadd(STREAM, fields(key="k1", message_id=message_id))
    consumer(redis_client, "mail", handled_mail, fail=False).poll()
    consumer(redis_client, "search", handled_search, fail=True).poll()

    [dead] = stream_dead_letters(client=redis_client)
    assert (dead.stream, dead.group, dead.message_id, dead.type, dead.key, dead.deliveries) == (
        STREAM, "search", message_id, "tests.Item", "k1", 1,
    )  # fmt: skip
    assert f"poison {message_id}" in dead.error and dead.dead_at

    new_id = stream_dead_letter_reappend(stream=STREAM, group="search", dead_id=dead.dead_id, client=redis_client)

    assert new_id and stream_dead_letters(client=redis_client) == []
    appended = redis_client.xrange(f"{STREAM}:retry:search", new_id, new_id)[0][1]
    assert {name.decode() for name in appended} == set(fields(message_id=message_id))  # no dead-letter fields
    consumer(redis_client, "search", handled_search, fail=False).poll()
    consumer(redis_client, "mail", handled_mail, fail=False).poll()
    assert handled_search == [message_id]
    assert handled_mail == [message_id]  # the other group never sees the retry
    assert redis_client.xpending(STREAM, "mail")["pending"] == 0


def test_re_appending_twice_appends_once(redis_client):
    dead_id = redis_client.xadd(f"{STREAM}:dead:search", {**fields(message_id="m-2"), "error": "boom"})

    first = stream_dead_letter_reappend(stream=STREAM, group="search", dead_id=dead_id.decode(), client=redis_client)
    second = stream_dead_letter_reappend(stream=STREAM, group="search", dead_id=dead_id.decode(), client=redis_client)

    assert first is not None and second is None
    assert redis_client.xlen(f"{STREAM}:retry:search") == 1
    assert not redis_client.exists(STREAM)  # the relay's stream is never written


def test_only_the_platforms_redis_streams_take_re_appends(redis_client):
    with pytest.raises(ValueError):
        stream_dead_letter_reappend(stream="elsewhere", group="g", dead_id="1-0", client=redis_client)


def test_foreign_keys_and_odd_fields_are_tolerated(redis_client):
    redis_client.set(f"{STREAM}:dead:not-a-stream", "x")
    redis_client.xadd(f"{STREAM}:dead:odd", {"deliveries": "many", "\xff": "x"})

    [odd] = stream_dead_letters(client=redis_client)

    assert (odd.group, odd.message_id, odd.deliveries) == ("odd", "", None)
