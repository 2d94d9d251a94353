"""Queue depth and oldest-message age, read from a real Redis and a real RabbitMQ."""

import json
import time
import uuid

import pytest
from celery import current_app
from kombu import Connection, Exchange, Producer, Queue

from tasks.monitoring import publish_timestamps
from tasks.monitoring.queue_stats import queue_stats
from tests.support.monitoring import send_at

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def test_depth_and_age_of_the_oldest_message_when_tasks_wait_in_redis(redis_client, monkeypatch):
    send_at(monkeypatch, 300, queue="low")
    send_at(monkeypatch, 20, queue="low")
    send_at(monkeypatch, 5, queue="high")

    stats = {s.name: s for s in queue_stats()}

    assert stats["low"].depth == 2
    assert 290 < stats["low"].oldest_age_seconds < 400  # the first one sent, not the newest
    assert stats["high"].depth == 1
    assert stats["default"].depth == 0
    assert stats["default"].oldest_age_seconds is None


def test_messages_on_priority_keys_are_counted_when_sent_with_a_priority(redis_client, monkeypatch):
    send_at(monkeypatch, 10, queue="default")
    send_at(monkeypatch, 500, queue="default", priority=9)

    # kombu keeps priority 9 in its own list, "default\x06\x169"; check the layout we rely on.
    assert any(key.startswith(b"default\x06\x16") for key in redis_client.keys("default*"))
    (stats,) = queue_stats(["default"])
    assert stats.depth == 2
    assert stats.oldest_age_seconds > 490


def test_every_published_task_carries_its_send_time_in_the_headers(redis_client):
    before = time.time()
    current_app.send_task("tasks.ping", queue="default")

    raw = redis_client.lindex("default", -1)
    headers = json.loads(raw)["headers"]
    assert before <= headers[publish_timestamps.SENT_AT_HEADER] <= time.time()


def test_age_is_unknown_when_a_message_has_no_send_time(redis_client):
    redis_client.lpush("low", json.dumps({"body": "", "headers": {}, "properties": {}}))

    (stats,) = queue_stats(["low"])
    assert stats.depth == 1
    assert stats.oldest_age_seconds is None


@pytest.fixture
def rabbitmq_queue():
    name = f"monitoring-test-{uuid.uuid4().hex[:8]}"
    with Connection(RABBITMQ_URL, connect_timeout=5) as conn:
        queue = Queue(name, Exchange(name, type="direct"), routing_key=name, durable=False)
        queue(conn.default_channel).declare()
        yield conn, queue
        queue(conn.default_channel).delete()


def test_depth_comes_from_a_passive_declare_when_the_broker_is_rabbitmq(rabbitmq_queue):
    conn, queue = rabbitmq_queue
    producer = Producer(conn.default_channel)
    for n in range(3):
        producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key, serializer="json")

    (stats,) = queue_stats([queue.name], broker_url=RABBITMQ_URL)
    assert stats.depth == 3
    assert stats.oldest_age_seconds is None  # not measurable on AMQP without taking the message

    # Looking did not take anything: the messages are all still there.
    assert queue(conn.default_channel).queue_declare(passive=True).message_count == 3


def test_a_queue_never_declared_on_rabbitmq_has_depth_zero():
    (stats,) = queue_stats([f"never-declared-{uuid.uuid4().hex[:8]}"], broker_url=RABBITMQ_URL)
    assert stats.depth == 0
