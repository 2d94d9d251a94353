"""Two relays draining one outbox at once send each row once (SKIP LOCKED on PostgreSQL,
the single write lock on SQLite)."""

import sys
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from tasks.models import Delivery, Outbox
from tests.support.ledger.handlers import LedgerEvent
from tests.support.processes import ManagedProcess, process_env

pytestmark = pytest.mark.slow

ROWS = 300


def test_two_relays_send_each_outbox_row_once(transactional_db, redis_client):
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("counts messages in the Redis list")
    old = timezone.now() - timedelta(minutes=1)
    events = [LedgerEvent(key=f"r{i}") for i in range(ROWS)]
    Outbox.objects.bulk_create(
        Outbox(message_id=e.message_id, message_type=e.message_name, payload=e.to_json()) for e in events
    )
    Outbox.objects.update(created_at=old)

    env = process_env(OUTBOX_RELAY_BATCH="10", OUTBOX_RELAY_GRACE="0")
    relays = [
        ManagedProcess([sys.executable, "manage.py", "relay_outbox", "--once"], name=f"relay-once-{n}", env=env)
        for n in range(2)
    ]
    for relay in relays:
        relay.start(wait=False)
    for relay in relays:
        assert relay.proc.wait(timeout=120) == 0, relay.log()[-2000:]

    sent = [int(relay.log().strip().rsplit(" ", 1)[-1]) for relay in relays]
    assert sum(sent) == ROWS
    assert not Outbox.objects.filter(sent_at__isnull=True).exists()
    assert redis.Redis.from_url(settings.CELERY_BROKER_URL).llen("default") == ROWS
    assert Delivery.objects.count() == ROWS
