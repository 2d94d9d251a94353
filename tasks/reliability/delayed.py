"""The relay's ``delayed`` pass: deliveries held in the database until due, sent when due.

A delayed job (``register_event(..., run_after=...)``, a Django task's ``run_after``) never waits
in the broker as an ETA message, which avoids two Celery failures: on Redis a message held longer
than the visibility timeout is handed to a second worker and runs twice; on RabbitMQ a worker
that holds ETA messages past ``consumer_timeout`` has its channel closed. Here the row waits, and
the relay publishes it as an ordinary message once ``run_after`` has passed.

Each batch is claimed (delayed -> pending, committed) before it is published, so a worker always
finds its row startable. A broker that refuses gets the batch back (pending -> delayed); a relay
that dies between the commit and the publish leaves pending rows the broker never saw, which the
re-send sweeper sends, as for any lost delivery. Cancelled rows are never claimed.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tasks.messaging.deliveries import deliveries_publish_released
from tasks.models import Delivery
from tasks.reliability.delivery_state import deliveries_hold, deliveries_release_due

logger = logging.getLogger(__name__)


def deliveries_send_due(*, limit: int | None = None) -> int:
    """Publish the delayed deliveries whose ``run_after`` has passed, earliest first (at most
    ``limit``, ``DELAYED_RELEASE_BATCH`` by default); return how many were released.

    Raises DispatchError when the broker is unavailable; the batch is then delayed again.
    """
    limit = limit or settings.DELAYED_RELEASE_BATCH
    with transaction.atomic():
        due = Delivery.objects.filter(status=Delivery.Status.DELAYED, run_after__lte=timezone.now()).order_by(
            "run_after"
        )
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        rows = list(due[:limit])
        if not rows:
            return 0
        deliveries_release_due(pks=[row.pk for row in rows])
    deliveries_publish_released(rows, give_back=lambda pks: deliveries_hold(pks=pks))
    logger.info("released %d delayed deliveries", len(rows))
    return len(rows)
