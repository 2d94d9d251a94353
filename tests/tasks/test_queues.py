"""Queues and priorities: high-priority work overtakes a backlog, on Redis and on RabbitMQ."""

from __future__ import annotations

import pytest
from celery import current_app

from tasks.queues import DEFAULT, HIGH_PRIORITY, LOW_PRIORITY, PRIORITY_MAX, broker_priority
from tests.support.priority_tasks import STARTS_KEY
from tests.support.processes import CeleryWorker, process_env
from tests.support.waiting import wait_until

BACKLOG = 1000
# "Within the time of a few tasks": the worker holds one message it prefetched, and may be
# between two polls when the high one arrives.
FEW = 10


@pytest.mark.parametrize(("broker_url", "expected"), [("redis://h/0", (9, 0, 4)), ("amqp://h//", (0, 9, 5))])
def test_a_platform_priority_becomes_what_the_broker_serves_first(broker_url, expected):
    def on_broker(priority: int) -> int:
        return broker_priority(priority, broker_url=broker_url)

    assert (on_broker(0), on_broker(PRIORITY_MAX), on_broker(5)) == expected
    assert on_broker(42) == on_broker(PRIORITY_MAX) and on_broker(-3) == on_broker(0)


def test_each_queue_orders_its_messages_by_priority_on_rabbitmq():
    queues = {queue.name: queue for queue in current_app.conf.task_queues}
    assert {name: q.max_priority for name, q in queues.items()} == {
        name: PRIORITY_MAX for name in (HIGH_PRIORITY, DEFAULT, LOW_PRIORITY)
    }
    assert current_app.conf.broker_transport_options["queue_order_strategy"] == "priority"


def started_after_backlog(redis_client, send_backlog, send_urgent) -> int:
    """How many tasks started between the urgent one's send and its own start."""
    worker = CeleryWorker(concurrency=1, extra_args=("--include", "tests.support.priority_tasks"), env=process_env())
    with worker:
        send_backlog()
        wait_until(lambda: redis_client.llen(STARTS_KEY) >= 3, timeout=30, message=lambda: worker.log()[-2000:])
        started_before = redis_client.llen(STARTS_KEY)
        send_urgent()
        wait_until(
            lambda: b"urgent" in redis_client.lrange(STARTS_KEY, 0, -1),
            timeout=60,
            message=lambda: worker.log()[-2000:],
        )
        position = redis_client.lrange(STARTS_KEY, 0, -1).index(b"urgent")
        assert redis_client.llen(STARTS_KEY) < BACKLOG, "the backlog drained before the urgent one was sent"
    return position - started_before


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.usefixtures("clean_broker_queues")
def test_a_high_priority_task_starts_within_a_few_tasks_of_a_backlog_of_low_and_default_work(redis_client):
    def backlog():
        for n in range(BACKLOG):
            current_app.send_task("tests.record_start", (f"backlog-{n}", 0.005), queue=(LOW_PRIORITY, DEFAULT)[n % 2])

    def urgent():
        current_app.send_task("tests.record_start", ("urgent",), queue=HIGH_PRIORITY)

    assert started_after_backlog(redis_client, backlog, urgent) <= FEW


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.usefixtures("clean_broker_queues")
def test_a_high_priority_message_overtakes_a_backlog_in_its_own_queue(redis_client):
    def backlog():
        for n in range(BACKLOG):
            current_app.send_task(
                "tests.record_start", (f"backlog-{n}", 0.005), queue=DEFAULT, priority=broker_priority(0)
            )

    def urgent():
        current_app.send_task("tests.record_start", ("urgent",), queue=DEFAULT, priority=broker_priority(PRIORITY_MAX))

    assert started_after_backlog(redis_client, backlog, urgent) <= FEW
