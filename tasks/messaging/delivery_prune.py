"""Pruning done Delivery rows: the service behind the ``prune_deliveries`` job (``tasks.tasks``).

A done row is what makes a second copy of its delivery a no-op, so it is kept for the
idempotency window, ``DELIVERY_RETENTION_DAYS`` (settings check that it outlasts every way a copy
can still arrive: re-sends, Redis restores, retries, deploys, sent outbox rows). Only done rows
completed before the window go; pending, running, unplanned and dead rows never do (a dead one
is an operator's to requeue). Deleted in primary-key batches, each its own short statement, so
no delete holds many row locks or the table for long.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from tasks.models import Delivery

PRUNE_BATCH_SIZE = 5000


def deliveries_prune_done(*, retention: timedelta | None = None, batch_size: int = PRUNE_BATCH_SIZE) -> int:
    """Delete done deliveries completed longer than ``retention`` ago; return how many went."""
    retention = retention if retention is not None else timedelta(days=settings.DELIVERY_RETENTION_DAYS)
    cutoff = timezone.now() - retention
    expired = Delivery.objects.filter(status=Delivery.Status.DONE, completed_at__lt=cutoff)
    deleted = 0
    while True:
        # Oldest first along the partial index on done rows' completed_at.
        pks = list(expired.order_by("completed_at").values_list("pk", flat=True)[:batch_size])
        if not pks:
            return deleted
        # The filter again: only rows still done and expired go, whatever happened since the read.
        deleted += expired.filter(pk__in=pks).delete()[0]
