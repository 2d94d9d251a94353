"""The consumer library against Redis Streams (in this process) and RabbitMQ; the slow tests run
``stream_consume`` processes and kill one with kill -9 mid-batch."""

import json
import threading
import time
import uuid

import pytest
import redis
from kombu import Connection, Exchange, Producer

from tasks.streams.consumer import RabbitMQConsumer, RedisStreamConsumer
from tasks.streams.entries import exchange_name
from tests.support.streams import ON_SHARED_RABBITMQ, RABBITMQ_URL, StreamConsumer, fields, handled
from tests.support.waiting import wait_until

pytestmark = ON_SHARED_RABBITMQ


def consumer(client: redis.Redis, handler, *, name: str = "c1", stream: str = "tests.consumed", **options):
    options = {"claim_idle": 0.2, "max_deliveries": 3, "block": 0.05, **options}
    return RedisStreamConsumer(client, stream=stream, group="g", consumer=name, handler=handler, **options)


def poll_until_idle(*consumers: RedisStreamConsumer, rounds: int = 40) -> None:
    for _ in range(rounds):
        for c in consumers:
            c.poll()
        time.sleep(0.03)


def test_each_entry_is_handled_and_acked_once_and_a_copy_by_message_id_is_skipped(redis_client):
    seen = []
    first = fields(key="a")
    redis_client.xadd("tests.consumed", first)
    redis_client.xadd("tests.consumed", fields(key="b"))
    redis_client.xadd("tests.consumed", first)  # a copy of the first event
    c = consumer(redis_client, seen.append)
    c.ensure_group()
    c.ensure_group()  # idempotent

    poll_until_idle(c, rounds=3)

    assert [e.key for e in seen] == ["a", "b"]
    assert seen[0].payload == {} and seen[0].deliveries == 1 and seen[0].stream == "tests.consumed"
    assert redis_client.xpending("tests.consumed", "g")["pending"] == 0


def test_a_failing_entry_is_retried_after_the_idle_time_then_dead_lettered_with_its_error(redis_client):
    attempts = []

    def handler(event):
        attempts.append(event.deliveries)
        raise ValueError("cannot index this")

    redis_client.xadd("tests.consumed", fields(key="poison"))
    c = consumer(redis_client, handler)
    c.ensure_group()

    wait_until(lambda: c.poll() is not None and redis_client.exists("tests.consumed:dead:g"), timeout=10, interval=0)

    assert attempts == [1, 2, 3]
    ((_, dead),) = redis_client.xrange("tests.consumed:dead:g")
    assert dead[b"error"] == b"ValueError: cannot index this" and dead[b"key"] == b"poison"
    assert dead[b"deliveries"] == b"3"
    assert redis_client.xpending("tests.consumed", "g")["pending"] == 0


def test_a_dead_consumers_pending_entries_are_claimed_by_another_after_the_idle_time(redis_client):
    for key in "abc":
        redis_client.xadd("tests.consumed", fields(key=key))
    dead = consumer(redis_client, lambda e: None, name="dead")
    dead.ensure_group()
    redis_client.xreadgroup("g", "dead", {"tests.consumed": ">"}, count=10)  # read, then it died
    taken = []
    alive = consumer(redis_client, taken.append, name="alive", claim_idle=0.5)

    alive.poll()
    assert taken == []  # not idle long enough yet
    time.sleep(0.6)
    alive.poll()

    assert [e.key for e in taken] == ["a", "b", "c"] and {e.deliveries for e in taken} == {2}
    assert redis_client.xpending("tests.consumed", "g")["pending"] == 0


def test_a_malformed_entry_goes_to_the_dead_letter_stream_at_once(redis_client):
    redis_client.xadd("tests.consumed", {"message_id": "not-a-uuid", "type": "x"})
    handled_events = []
    c = consumer(redis_client, handled_events.append)
    c.ensure_group()

    c.poll()

    assert handled_events == []
    ((_, dead),) = redis_client.xrange("tests.consumed:dead:g")
    assert dead[b"error"].startswith(b"malformed entry: missing fields")


def test_a_dead_letter_put_on_the_groups_retry_stream_is_handled_again_and_acknowledged_there(redis_client):
    fail = [True]

    def handler(event):
        if fail[0]:
            raise ValueError("index down")
        handled_keys.append(event.key)

    handled_keys: list[str] = []
    redis_client.xadd("tests.consumed", fields(key="retried"))
    c = consumer(redis_client, handler, max_deliveries=1)
    c.ensure_group()
    c.poll()
    ((_, dead),) = redis_client.xrange("tests.consumed:dead:g")

    fail[0] = False  # the index is back; an operator hands the entry back to this group only
    original = {
        k: v for k, v in dead.items() if k not in (b"error", b"entry_id", b"deliveries", b"consumer", b"dead_at")
    }
    redis_client.xadd(c.retry_stream, original)
    poll_until_idle(c, rounds=3)

    assert handled_keys == ["retried"]
    assert redis_client.xpending(c.retry_stream, "g")["pending"] == 0
    assert redis_client.xpending("tests.consumed", "g")["pending"] == 0


def test_an_entry_whose_consumer_died_each_time_is_dead_lettered_after_the_cap(redis_client):
    redis_client.xadd("tests.consumed", fields(key="killer"))
    c = consumer(redis_client, lambda e: None, name="x", claim_idle=0.05)
    c.ensure_group()
    for n in range(3):  # three consumers read it and died
        redis_client.xreadgroup("g", f"dead-{n}", {"tests.consumed": ">" if n == 0 else "0"}, count=1)
        time.sleep(0.06)
        redis_client.xautoclaim("tests.consumed", "g", f"dead-{n + 1}", min_idle_time=50, count=10)
    time.sleep(0.06)

    c.poll()

    ((_, dead),) = redis_client.xrange("tests.consumed:dead:g")
    assert b"without an ack" in dead[b"error"]


@pytest.mark.slow
@pytest.mark.serial  # the takeover is bounded by the claim idle time
def test_a_group_of_three_handles_every_entry_when_one_is_killed_mid_batch(transactional_db, redis_client):
    stream, group, idle = f"tests.group-{uuid.uuid4().hex[:6]}", "search", 2.0
    ids = [redis_client.xadd(stream, fields(key=f"k{n % 7}", payload={"sleep": 0.02})) for n in range(300)]
    poison = redis_client.xadd(stream, fields(key="poison", payload={"poison": True}))
    args = ("--claim-idle", str(idle), "--max-deliveries", "3", "--batch", "10")
    consumers = [StreamConsumer(stream=stream, group=group, args=(*args, "--consumer", f"c{n}")) for n in range(3)]
    for c in consumers:
        c.start()
    try:
        victim = consumers[0]
        wait_until(lambda: sum(row["pid"] == victim.proc.pid for row in handled(redis_client)) >= 15, timeout=30)
        victim.kill()  # kill -9 mid-batch: read entries pending in its name
        killed_at = time.time()
        orphans = {p["message_id"] for p in redis_client.xpending_range(stream, group, "-", "+", 100, "c0")}
        assert orphans, "the killed consumer held no pending entries"
        wait_until(lambda: redis_client.xpending(stream, group)["pending"] == 0, timeout=60)
    finally:
        for c in consumers:
            c.stop(timeout=10)

    rows = handled(redis_client)
    stream_ids = {entry_id: fields_[b"message_id"].decode() for entry_id, fields_ in redis_client.xrange(stream)}
    assert {row["message_id"] for row in rows} == {stream_ids[i] for i in ids}
    orphan_messages = {stream_ids[i] for i in orphans}
    taken_over = [row for row in rows if row["message_id"] in orphan_messages and row["pid"] != victim.proc.pid]
    assert {row["message_id"] for row in taken_over} == orphan_messages
    assert max(row["at"] for row in taken_over) - killed_at < idle + 3.0  # claimed within the idle setting
    ((_, dead),) = redis_client.xrange(f"{stream}:dead:{group}")
    assert dead[b"message_id"].decode() == stream_ids[poison] and dead[b"error"].startswith(b"ValueError: poison")


def publish(stream: str, *bodies: dict) -> None:
    """Publish entries as the RabbitMQ sink does (persistent JSON on the family's topic exchange)."""
    with Connection(RABBITMQ_URL, connect_timeout=5, transport_options={"confirm_publish": True}) as conn:
        producer = Producer(conn.default_channel)
        exchange = Exchange(exchange_name(stream), "topic", durable=True)
        for body in bodies:
            producer.publish(
                json.dumps(body).encode(), exchange=exchange, routing_key=f"{stream}.{body['key']}",
                delivery_mode=2, content_type="application/json", content_encoding="utf-8",
                message_id=body["message_id"], declare=[exchange],
            )  # fmt: skip


def amqp_body(*, key: str = "k", payload: dict | None = None, message_id: str | None = None) -> dict:
    body = fields(key=key, message_id=message_id)
    return {**body, "payload": payload or {}, "schema_version": 1}


def dead_letters(queue_consumer: RabbitMQConsumer) -> list:
    got = []
    with Connection(RABBITMQ_URL, connect_timeout=5) as conn:
        queue = queue_consumer.dead_letter_queue.bind(conn.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            got.append(message)
    return got


@pytest.fixture
def rabbitmq_groups():
    """Consumers made for the test; their queues, DLQs and dead-letter exchanges deleted after it."""
    made: list[RabbitMQConsumer] = []
    yield made
    with Connection(RABBITMQ_URL, connect_timeout=5) as conn:
        channel = conn.default_channel
        for c in made:
            c.queue.bind(channel).delete()
            c.dead_letter_queue.bind(channel).delete()
            c.dead_exchange.bind(channel).delete()


def run_in_thread(c: RabbitMQConsumer) -> threading.Thread:
    thread = threading.Thread(target=c.run, daemon=True)
    thread.start()
    return thread


def test_rabbitmq_handles_each_message_once_and_sends_a_poison_one_to_the_dlq_after_the_cap(rabbitmq_groups):
    stream = f"tests.rmq-{uuid.uuid4().hex[:8]}"
    seen, attempts = [], []

    def handler(event):
        if event.payload.get("poison"):
            attempts.append(event.deliveries)
            raise ValueError("cannot index this")
        seen.append(event.key)

    c = RabbitMQConsumer(RABBITMQ_URL, stream=stream, group="g", handler=handler, max_deliveries=3, prefetch=5)
    rabbitmq_groups.append(c)
    c.declare()
    first = amqp_body(key="a")
    publish(stream, first, amqp_body(key="poison", payload={"poison": True}), amqp_body(key="b"), first)
    thread = run_in_thread(c)
    try:
        wait_until(lambda: len(seen) == 2 and len(attempts) == 3, timeout=15)
        wait_until(lambda: len(dead := dead_letters(c)) == 1 and dead, timeout=10)
    finally:
        c.stop()
        thread.join(timeout=10)

    assert sorted(seen) == ["a", "b"] and attempts == [1, 2, 3]


def test_rabbitmq_dead_letter_carries_the_error(rabbitmq_groups):
    stream = f"tests.rmq-{uuid.uuid4().hex[:8]}"

    def handler(event):
        raise ValueError("cannot index this")

    c = RabbitMQConsumer(RABBITMQ_URL, stream=stream, group="g", handler=handler, max_deliveries=2)
    rabbitmq_groups.append(c)
    c.declare()
    body = amqp_body(key="poison")
    publish(stream, body)
    thread = run_in_thread(c)
    try:
        dead = wait_until(lambda: dead_letters(c), timeout=15)
    finally:
        c.stop()
        thread.join(timeout=10)

    assert dead[0].headers["x-error"] == "ValueError: cannot index this"
    assert dead[0].properties["message_id"] == body["message_id"]
    assert json.loads(dead[0].body)["key"] == "poison"


def test_rabbitmq_a_message_that_outlives_the_queue_ttl_goes_to_the_dlq_as_expired(rabbitmq_groups):
    stream = f"tests.rmq-{uuid.uuid4().hex[:8]}"
    c = RabbitMQConsumer(RABBITMQ_URL, stream=stream, group="slow", handler=print, message_ttl=200, max_priority=5)
    rabbitmq_groups.append(c)
    c.declare()  # nobody consumes

    publish(stream, amqp_body(key="late"))

    dead = wait_until(lambda: dead_letters(c), timeout=10)
    assert dead[0].headers["x-death"][0]["reason"] == "expired"
    assert json.loads(dead[0].body)["key"] == "late"


def test_rabbitmq_a_consumer_queue_with_a_maximum_priority_hands_over_the_urgent_message_first(rabbitmq_groups):
    stream = f"tests.rmq-{uuid.uuid4().hex[:8]}"
    order = []
    c = RabbitMQConsumer(RABBITMQ_URL, stream=stream, group="g", handler=lambda e: order.append(e.key), max_priority=9)
    rabbitmq_groups.append(c)
    c.declare()  # the backlog waits in the queue before anyone consumes
    with Connection(RABBITMQ_URL, connect_timeout=5, transport_options={"confirm_publish": True}) as conn:
        producer = Producer(conn.default_channel)
        exchange = Exchange(exchange_name(stream), "topic", durable=True)
        for key, priority in [*((f"backlog-{n}", 0) for n in range(50)), ("urgent", 9)]:
            body = amqp_body(key=key)
            producer.publish(
                json.dumps(body).encode(), exchange=exchange, routing_key=f"{stream}.{key}", priority=priority,
                delivery_mode=2, content_type="application/json", content_encoding="utf-8",
                message_id=body["message_id"], declare=[exchange],
            )  # fmt: skip
    thread = run_in_thread(c)
    try:
        wait_until(lambda: len(order) == 51, timeout=15)
    finally:
        c.stop()
        thread.join(timeout=10)

    assert order[0] == "urgent"


def test_a_quorum_queue_refuses_a_maximum_priority():
    with pytest.raises(ValueError, match="quorum"):
        RabbitMQConsumer(RABBITMQ_URL, stream="tests.x", group="g", handler=print, quorum=True, max_priority=5)


@pytest.mark.slow
def test_rabbitmq_consumers_handle_every_message_when_one_is_killed_mid_message(transactional_db, redis_client):
    stream, group = f"tests.rmq-{uuid.uuid4().hex[:8]}", "search"
    args = ("--sink", "rabbitmq", "--max-deliveries", "3", "--batch", "5")
    consumers = [StreamConsumer(stream=stream, group=group, args=args) for _ in range(3)]
    probe = RabbitMQConsumer(RABBITMQ_URL, stream=stream, group=group, handler=print)
    consumers[0].start()  # declares the queue before anything is published
    try:
        bodies = [amqp_body(key=f"k{n % 7}", payload={"sleep": 0.03}) for n in range(200)]
        publish(stream, *bodies[:100], amqp_body(key="poison", payload={"poison": True}), *bodies[100:])
        for c in consumers[1:]:
            c.start()
        victim = consumers[0]
        wait_until(lambda: sum(row["pid"] == victim.proc.pid for row in handled(redis_client)) >= 10, timeout=30)
        victim.kill()  # mid-message: its prefetched, unacked messages go back to the queue
        wanted = {b["message_id"] for b in bodies}

        def missing() -> str:  # for a failure: what is missing, and what the survivors said
            left = wanted - {r["message_id"] for r in handled(redis_client)}
            return f"{len(left)} not handled; " + " | ".join(c.log()[-1500:] for c in consumers[1:])

        wait_until(lambda: {r["message_id"] for r in handled(redis_client)} >= wanted, timeout=60, message=missing)
        dead = wait_until(lambda: dead_letters(probe), timeout=30)
    finally:
        for c in consumers:
            c.stop(timeout=10)
        with Connection(RABBITMQ_URL, connect_timeout=5) as conn:
            for queue in (probe.queue, probe.dead_letter_queue):
                queue.bind(conn.default_channel).delete()
            probe.dead_exchange.bind(conn.default_channel).delete()

    assert dead[0].headers["x-error"].startswith("ValueError: poison")
    rows = handled(redis_client)
    assert len(rows) - len({r["message_id"] for r in rows}) <= 5  # at most the victim's in-flight prefetch again
