"""The sweeper re-sends what the broker lost and never what it still holds (issue 14 item 2).

On Redis the broker is read as kombu leaves it: queue lists (priority sub-lists too) and the
``unacked`` hash. On RabbitMQ counts bound the re-sends. Each test uses the real broker.
"""

import json
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from kombu import Connection

from tasks.messaging import broker_presence
from tasks.messaging.deliveries import deliveries_publish
from tasks.models import Delivery
from tasks.reliability import sweeper
from tasks.reliability.sweeper import StaleDeliverySweeper, deliveries_resend_stale
from tests.support.deliveries import delivery_row

OLD = timedelta(minutes=5)
CUTOFF = timedelta(minutes=1)
ON_REDIS = django_settings.CELERY_BROKER_URL.startswith("redis")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("quick_confirmation")]
redis_only = pytest.mark.skipif(not ON_REDIS, reason="reads kombu's Redis keys")
amqp_only = pytest.mark.skipif(ON_REDIS, reason="RabbitMQ counts (run with TEST_BROKER_URL=amqp://...)")


@pytest.fixture
def empty_broker(redis_client):
    """The tests' Redis flushed (redis_client), and on RabbitMQ the three queues purged."""
    if not ON_REDIS:
        from tests.e2e.conftest import purge_platform_queues  # noqa: PLC0415 (only on RabbitMQ)

        purge_platform_queues()
    yield
    if not ON_REDIS:
        from tests.e2e.conftest import purge_platform_queues  # noqa: PLC0415 (only on RabbitMQ)

        purge_platform_queues()


def sent_delivery(*, status: str = Delivery.Status.PENDING, publish: bool = True, queue: str = "low") -> Delivery:
    """A delivery sent ``OLD`` ago (published now, so the broker holds it, unless ``publish`` is off)."""
    row = delivery_row(status=status, sent_ago=OLD, queue=queue)
    if publish:
        deliveries_publish([row])
    return row


def send_count(row: Delivery) -> int:
    row.refresh_from_db()
    return row.send_count


def take_into_unacked(redis_client, queue: str = "low") -> None:
    """What a worker's reservation does (kombu: BRPOP, then HSET unacked tag [message, ex, rk])."""
    raw = redis_client.rpop(queue)
    envelope = json.loads(raw)
    tag = envelope["properties"]["delivery_tag"]
    redis_client.hset("unacked", tag, json.dumps([envelope, queue, queue]))
    redis_client.zadd("unacked_index", {tag: 0})


# --- Redis ---------------------------------------------------------------------------------------


@redis_only
def test_a_delivery_waiting_in_its_queue_is_not_resent_when_it_is_stale(empty_broker, redis_client):
    row = sent_delivery()
    assert deliveries_resend_stale(older_than=CUTOFF) == 0
    assert redis_client.llen("low") == 1
    assert send_count(row) == 1


@redis_only
def test_a_delivery_in_a_priority_list_is_not_resent_when_it_is_stale(empty_broker, redis_client):
    row = sent_delivery()
    redis_client.lpush("low\x06\x163", redis_client.rpop("low"))  # kombu's key for priority step 3
    assert deliveries_resend_stale(older_than=CUTOFF) == 0
    assert send_count(row) == 1


@redis_only
def test_a_reserved_delivery_in_the_unacked_hash_is_not_resent_when_it_is_stale(empty_broker, redis_client):
    row = sent_delivery(status=Delivery.Status.RUNNING)
    take_into_unacked(redis_client)
    assert deliveries_resend_stale(older_than=CUTOFF) == 0
    assert redis_client.llen("low") == 0
    assert send_count(row) == 1


@redis_only
def test_a_delivery_absent_from_the_broker_twice_is_resent_once(empty_broker, redis_client):
    held = sent_delivery()
    lost = sent_delivery(publish=False)  # what a kill in kombu's pop-to-unacked gap leaves
    assert deliveries_resend_stale(older_than=CUTOFF) == 1
    assert (send_count(held), send_count(lost)) == (1, 2)
    assert redis_client.llen("low") == 2
    assert deliveries_resend_stale(older_than=CUTOFF) == 0  # re-sent now: not stale, and held


@redis_only
def test_a_delivery_absent_at_the_first_look_is_not_resent_when_the_second_finds_it(
    empty_broker, redis_client, monkeypatch
):
    # The first look falls in a worker's pop-to-unacked gap; by the second the message is unacked.
    row = sent_delivery(status=Delivery.Status.RUNNING)
    raw = redis_client.rpop("low")

    def between_looks(seconds):
        redis_client.lpush("low", raw)
        take_into_unacked(redis_client)

    monkeypatch.setattr(sweeper.time, "sleep", between_looks)
    assert deliveries_resend_stale(older_than=CUTOFF) == 0
    assert send_count(row) == 1


@redis_only
def test_a_delivery_done_between_the_two_looks_is_not_resent(empty_broker, redis_client, monkeypatch):
    row = sent_delivery(publish=False)
    monkeypatch.setattr(
        sweeper.time, "sleep", lambda s: Delivery.objects.filter(pk=row.pk).update(status=Delivery.Status.DONE)
    )
    assert deliveries_resend_stale(older_than=CUTOFF) == 0
    assert redis_client.llen("low") == 0


@redis_only
def test_held_task_ids_ignore_messages_that_are_not_ours(empty_broker, redis_client):
    sent_delivery()
    redis_client.lpush("low", b"not json")
    redis_client.hset("unacked", "x", b"[1, 2]")
    with broker_presence.broker_connection() as connection:
        held = broker_presence.broker_held_task_ids(connection, ["low"])
    assert held == set(Delivery.objects.values_list("task_id", flat=True))


@redis_only
def test_the_sweeper_asks_the_broker_only_when_a_delivery_is_old_enough_and_at_most_once_per_interval(
    empty_broker, redis_client, settings, monkeypatch
):
    settings.DELIVERY_LOST_CHECK_INTERVAL = 10
    now = [0.0]
    looks = []
    real = broker_presence.broker_held_task_ids
    monkeypatch.setattr(broker_presence, "broker_held_task_ids", lambda *a: looks.append(1) or real(*a))
    sweep = StaleDeliverySweeper(clock=lambda: now[0])
    assert sweep() == 0
    assert looks == []  # no candidate: the broker is not asked

    sent_delivery(publish=False)
    now[0] = 5.0
    assert sweep() == 0  # throttled
    now[0] = 10.0
    assert sweep() == 1
    assert len(looks) == 2  # two looks, one sweep


# --- RabbitMQ --------------------------------------------------------------------------------------


@amqp_only
def test_ready_counts_come_from_a_passive_declare(empty_broker):
    sent_delivery()
    sent_delivery()
    with Connection(django_settings.CELERY_BROKER_URL) as connection:
        assert broker_presence.broker_ready_counts(connection, ["low", "high"]) == {"low": 2, "high": 0}


@amqp_only
def test_no_delivery_is_resent_while_the_broker_holds_as_many_messages_as_deliveries_pending(empty_broker):
    rows = [sent_delivery() for _ in range(3)]
    sent_delivery(status=Delivery.Status.RUNNING, publish=False)  # its message is unacked: not counted
    assert deliveries_resend_stale(older_than=CUTOFF) == 0
    assert [send_count(r) for r in rows] == [1, 1, 1]


@amqp_only
def test_at_most_pending_minus_ready_deliveries_are_resent_oldest_first(empty_broker):
    lost_old = sent_delivery(publish=False)
    Delivery.objects.filter(pk=lost_old.pk).update(sent_at=timezone.now() - OLD * 3)
    lost_newer = sent_delivery(publish=False)
    Delivery.objects.filter(pk=lost_newer.pk).update(sent_at=timezone.now() - OLD * 2)
    held = [sent_delivery() for _ in range(2)]
    # 4 pending, 2 ready: at most 2 re-sent, and the oldest (the ones a drained queue left behind).
    assert deliveries_resend_stale(older_than=CUTOFF) == 2
    assert (send_count(lost_old), send_count(lost_newer)) == (2, 2)
    assert [send_count(r) for r in held] == [1, 1]
    assert deliveries_resend_stale(older_than=CUTOFF) == 0


@redis_only
def test_a_queue_longer_than_the_scan_limit_is_not_read_and_nothing_on_it_is_resent(
    empty_broker, redis_client, settings
):
    settings.DELIVERY_LOST_SCAN_MAX = 1
    held = [sent_delivery() for _ in range(2)]  # a backlog of two: too long to read
    lost = sent_delivery(publish=False)
    assert deliveries_resend_stale(older_than=CUTOFF) == 0
    assert send_count(lost) == 1
    settings.DELIVERY_LOST_SCAN_MAX = 100
    assert deliveries_resend_stale(older_than=CUTOFF) == 1
    assert [send_count(r) for r in held] == [1, 1]
