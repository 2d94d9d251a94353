"""The re-send sweeper: deliveries sent long ago and still not done are sent again.

This closes the gaps ``acks_late`` cannot: a message lost between kombu's BRPOP and its unacked
record, or a send that failed. Handlers are idempotent per (message_id, handler), so a copy
that arrives after all does nothing.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from tasks.messaging.deliveries import deliveries_publish
from tasks.models import Delivery

logger = logging.getLogger(__name__)


def deliveries_resend_stale(*, older_than: timedelta | None = None, limit: int = 500) -> int:
    """Send again deliveries sent more than ``older_than`` ago and still not done; return how many."""
    older_than = older_than or timedelta(seconds=settings.DELIVERY_RESEND_AFTER)
    cutoff = timezone.now() - older_than
    stale = list(
        Delivery.objects.filter(
            status__in=[Delivery.Status.PENDING, Delivery.Status.RUNNING], sent_at__lte=cutoff
        ).order_by("sent_at")[:limit]
    )
    if not stale:
        return 0
    deliveries_publish(stale)
    Delivery.objects.filter(pk__in=[d.pk for d in stale]).update(sent_at=timezone.now(), send_count=F("send_count") + 1)
    logger.info("re-sent %d stale deliveries", len(stale))
    return len(stale)
