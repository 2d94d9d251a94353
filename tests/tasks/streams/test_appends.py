"""The relay's streams pass under faults: every committed event in its stream once, in commit order
per key, while the relay is killed with kill -9 and the stream's Redis restarts."""

import json
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.utils import timezone
from kombu import Connection

from tasks.models import Outbox, StreamEntry
from tasks.streams.appends import stream_entries_prune, stream_relay_pass
from tasks.streams.consumer import RabbitMQConsumer
from tasks.streams.sequencing import stream_events_sequence
from tasks.transaction import register_event
from tests.support.outage import TcpProxy
from tests.support.processes import DurableRedisServer, Relay
from tests.support.streams import (
    ON_SHARED_RABBITMQ,
    RABBITMQ_URL,
    STREAM,
    StreamConsumer,
    StreamedItem,
    Writer,
    handled,
    streams_env,
)
from tests.support.waiting import wait_until

pytestmark = [ON_SHARED_RABBITMQ, pytest.mark.django_db(transaction=True)]

EVENTS = 10_000
WRITERS = 4
KEYS = 40


def appended() -> int:
    return StreamEntry.objects.filter(appended_at__isnull=False).count()


@pytest.mark.slow
def test_every_event_is_appended_once_in_commit_order_per_key_when_the_relay_is_killed_and_redis_restarts(
    redis_client, tmp_path
):
    stream_redis = DurableRedisServer(tmp_path / "stream-redis").start()
    env = streams_env(STREAMS_REDIS_URL=stream_redis.url, OUTBOX_RELAY_INTERVAL="0.1", STREAMS_BATCH="200")
    writers = [Writer(w, EVENTS // WRITERS, KEYS) for w in range(WRITERS)]
    relay = Relay(env=env).start()
    started = time.monotonic()
    try:
        for writer in writers:
            writer.start()
        # Three kill -9s of the relay while the writers commit, each after it appended more; the
        # stream's Redis restarts between the second kill and the next relay.
        for kill in range(3):
            floor = appended()
            wait_until(lambda floor=floor: appended() > floor + 300, timeout=60, message=relay.log)
            relay.kill()
            if kill == 1:
                stream_redis.restart()
            relay = Relay(env=env).start()
        for writer in writers:
            assert writer.proc.wait(timeout=120) == 0, writer.log()
        wait_until(lambda: appended() == EVENTS, timeout=120, message=relay.log)
    finally:
        relay.stop(timeout=10)
        for writer in writers:
            writer.stop(timeout=5)
    elapsed = time.monotonic() - started

    client = redis.Redis.from_url(stream_redis.url)
    try:
        entries = client.xrange(STREAM)
    finally:
        client.close()
        stream_redis.stop()
    ids = [fields[b"message_id"].decode() for _, fields in entries]
    assert len(ids) == len(set(ids)) == EVENTS, f"{len(ids)} entries, {len(set(ids))} distinct"
    committed = Outbox.objects.filter(message_type=StreamedItem.message_name).values_list("message_id", flat=True)
    assert set(ids) == {str(m) for m in committed}
    ns_per_key = defaultdict(list)
    for _, fields in entries:
        ns_per_key[fields[b"key"].decode()].append(json.loads(fields[b"payload"])["n"])
    assert len(ns_per_key) == KEYS
    for key, ns in ns_per_key.items():
        assert ns == sorted(ns) and len(set(ns)) == len(ns), f"{key} out of commit order"
    print(f"{EVENTS} events through 3 relay kills and a Redis restart in {elapsed:.1f}s")


@pytest.mark.slow
def test_the_relay_appends_to_rabbitmq_through_an_outage_and_a_kill_and_a_consumer_gets_each_event_once_in_order(
    redis_client,
):
    group = f"g{uuid.uuid4().hex[:8]}"
    # One consumer with prefetch 1: the queue's order is the order it handles.
    consumer = StreamConsumer(stream=STREAM, group=group, args=("--sink", "rabbitmq", "--batch", "1"))
    probe = RabbitMQConsumer(RABBITMQ_URL, stream=STREAM, group=group, handler=print)
    # The relay reaches RabbitMQ through a proxy the test stops: an outage only the relay sees.
    parts = urlsplit(RABBITMQ_URL)
    proxy = TcpProxy(parts.hostname, parts.port or 5672).start()
    relay_url = urlunsplit(parts._replace(netloc=f"{parts.netloc.rpartition('@')[0]}@127.0.0.1:{proxy.port}"))
    env = streams_env(STREAMS_SINKS=f"{STREAM}=rabbitmq", STREAMS_RABBITMQ_URL=relay_url, OUTBOX_RELAY_INTERVAL="0.1")
    writers = [Writer(w, 500, 10) for w in range(2)]
    consumer.start()  # its queue exists before the first append
    relay = Relay(env=env).start()

    def got() -> int:
        return len({r["message_id"] for r in handled(redis_client)})

    try:
        for writer in writers:
            writer.start()
        wait_until(lambda: got() >= 150, timeout=60, message=relay.log)
        proxy.stop(timeout=5)
        time.sleep(2)
        proxy.start()
        wait_until(lambda: got() >= 400, timeout=60, message=relay.log)
        relay.kill()
        relay = Relay(env=env).start()
        for writer in writers:
            assert writer.proc.wait(timeout=60) == 0, writer.log()
        wait_until(lambda: got() >= 1000, timeout=90, message=relay.log)
    finally:
        relay.stop(timeout=10)
        consumer.stop(timeout=10)
        proxy.stop(timeout=5)
        with Connection(RABBITMQ_URL, connect_timeout=5) as conn:
            for queue in (probe.queue, probe.dead_letter_queue):
                queue.bind(conn.default_channel).delete()
            probe.dead_exchange.bind(conn.default_channel).delete()

    rows = handled(redis_client)
    committed = Outbox.objects.filter(message_type=StreamedItem.message_name).values_list("message_id", flat=True)
    assert [r["message_id"] for r in rows] == list(dict.fromkeys(r["message_id"] for r in rows))
    assert {r["message_id"] for r in rows} == {str(m) for m in committed}
    ns_per_key = defaultdict(list)
    for row in rows:
        ns_per_key[row["key"]].append(row["n"])
    assert all(ns == sorted(ns) for ns in ns_per_key.values())


def test_pruning_deletes_old_appended_entries_the_cursor_has_passed_and_keeps_the_rest(redis_client, settings):
    settings.STREAMS_ENTRY_RETENTION_DAYS = 1
    for n in range(4):
        register_event(StreamedItem(item_key="k", n=n))
    stream_relay_pass()
    stream_events_sequence()  # the cursor passes the rows
    entries = list(StreamEntry.objects.order_by("position"))
    old = timezone.now() - timedelta(days=2)
    StreamEntry.objects.filter(pk__in=[e.pk for e in entries[:2]]).update(appended_at=old)
    StreamEntry.objects.filter(pk=entries[2].pk).update(appended_at=None)  # not appended yet: kept
    StreamEntry.objects.filter(pk=entries[3].pk).update(appended_at=old, outbox_id=10**12)  # above the cursor

    assert stream_entries_prune() == 2

    assert list(StreamEntry.objects.order_by("position").values_list("position", flat=True)) == [3, 4]
