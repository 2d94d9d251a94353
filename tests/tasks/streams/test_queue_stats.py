"""RabbitMQ consumer queues for operators: messages, consumers and DLQ length of each watched queue."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse
from kombu import Connection, Producer

from tasks.streams.consumer import RabbitMQConsumer
from tasks.streams.queue_stats import consumer_queue_stats
from tests.support.monitoring import samples
from tests.support.streams import ON_SHARED_RABBITMQ, RABBITMQ_URL

pytestmark = ON_SHARED_RABBITMQ


@pytest.fixture
def consumer_queue():
    with Connection(RABBITMQ_URL, connect_timeout=5) as conn:
        c = RabbitMQConsumer(conn, stream=f"tests.qs-{uuid.uuid4().hex[:8]}", group="search", handler=print)
        c.declare()
        yield conn, c
        channel = conn.default_channel
        c.queue.bind(channel).delete()
        c.dead_letter_queue.bind(channel).delete()
        c.dead_exchange.bind(channel).delete()


def test_a_watched_queue_shows_its_messages_and_its_dlq_and_a_missing_one_counts_as_empty(consumer_queue):
    conn, c = consumer_queue
    producer = Producer(conn.default_channel)
    for n in range(2):
        producer.publish({"n": n}, exchange="", routing_key=c.queue_name)
    producer.publish({"n": 9}, exchange="", routing_key=f"{c.queue_name}.dead")
    missing = f"tests.qs-missing-{uuid.uuid4().hex[:8]}"

    watched, absent = consumer_queue_stats([c.queue_name, missing], url=RABBITMQ_URL)

    assert (watched.name, watched.messages, watched.consumers, watched.dead_letters, watched.exists) == (
        c.queue_name, 2, 0, 1, True,
    )  # fmt: skip
    assert (absent.messages, absent.dead_letters, absent.exists) == (0, 0, False)


def test_nothing_watched_needs_no_broker(settings):
    settings.STREAMS_RABBITMQ_WATCHED_QUEUES = []
    assert consumer_queue_stats(url="amqp://guest:guest@127.0.0.1:1//") == []


def test_metrics_report_each_watched_queue(consumer_queue, settings, admin_client_logged_in, redis_client):
    conn, c = consumer_queue
    Producer(conn.default_channel).publish({"n": 1}, exchange="", routing_key=c.queue_name)
    settings.STREAMS_RABBITMQ_URL = RABBITMQ_URL
    settings.STREAMS_RABBITMQ_WATCHED_QUEUES = [c.queue_name]

    found = samples(admin_client_logged_in.get(reverse("tasks:metrics")).content.decode())

    labels = (("queue", c.queue_name),)
    assert found[("platform_stream_queue_messages", labels)] == 1
    assert found[("platform_stream_queue_dead_letters", labels)] == 0
    assert found[("platform_metrics_source_up", (("source", "stream_queues"),))] == 1


def test_the_status_page_lists_each_watched_queue(consumer_queue, settings, admin_client_logged_in, redis_client):
    _, c = consumer_queue
    settings.STATUS_INSPECT_TIMEOUT = 0.3
    settings.STREAMS_RABBITMQ_URL = RABBITMQ_URL
    settings.STREAMS_RABBITMQ_WATCHED_QUEUES = [c.queue_name, "tests.qs-never-declared"]

    page = admin_client_logged_in.get(reverse("admin:platform_status")).content.decode()

    section = page[page.index('id="status-stream-queues"') :]
    assert c.queue_name in section and "tests.qs-never-declared (not declared)" in section
