"""Pruning of sent outbox rows: the service behind the ``prune_sent_outbox`` job (``tasks.tasks``).

A sent row is only history once the relay and the delivery records no longer need it; it
is kept ``OUTBOX_RETENTION_DAYS`` days for inspection, then deleted in batches so the
outbox table stays small and no delete holds its lock for long.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from tasks.models import Outbox

PRUNE_BATCH_SIZE = 5000


def outbox_prune_sent(*, retention: timedelta | None = None, batch_size: int = PRUNE_BATCH_SIZE) -> int:
    """Delete outbox rows sent longer than ``retention`` ago; return how many went."""
    retention = retention if retention is not None else timedelta(days=settings.OUTBOX_RETENTION_DAYS)
    cutoff = timezone.now() - retention
    deleted = 0
    while True:
        pks = list(Outbox.objects.filter(sent_at__lt=cutoff).order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not pks:
            return deleted
        deleted += Outbox.objects.filter(pk__in=pks).delete()[0]
