"""Appending: sequenced StreamEntry rows go to their stream's sink, in position order, once.

One stream at a time, a batch of its unappended entries is locked (``NOWAIT``: a stream another
relay is appending is skipped this pass, never appended out of order beside it), handed to the
sink, and marked appended in the same transaction. A relay killed after the sink took a batch
and before the mark committed appends the batch again on its next pass: the Redis sink
recognises its own ids, RabbitMQ consumers drop the copies by ``message_id``. A sink outage
raises ``StreamSinkUnavailable`` and the relay's pass backs off; the entries wait in order.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone

from tasks.messaging.trace_context import tracer
from tasks.models import StreamEntry
from tasks.streams.sequencing import stream_cursor, stream_events_sequence
from tasks.streams.sinks import StreamSinkUnavailable, sink_for

logger = logging.getLogger(__name__)

PRUNE_BATCH_SIZE = 5000
# Seconds between two prunes by one relay: a batch a minute outpaces any real event rate.
PRUNE_INTERVAL = 60.0
_pruned_at = -PRUNE_INTERVAL


def stream_entries_append(*, batch_size: int | None = None) -> int:
    """Append every unappended entry of every stream; return how many were appended.

    Each stream is appended apart: one whose sink is down does not hold the others back; the
    first outage is raised once the others had their turn.
    """
    batch_size = batch_size or settings.STREAMS_BATCH
    streams = StreamEntry.objects.filter(appended_at__isnull=True).values_list("stream", flat=True).distinct()
    total, outage = 0, None
    for stream in sorted(streams):
        try:
            total += _append_stream(stream, batch_size)
        except StreamSinkUnavailable as exc:
            outage = outage or exc
    if total:
        logger.info("appended %d stream entries", total)
    if outage is not None:
        raise outage
    return total


def _append_stream(stream: str, batch_size: int) -> int:
    total = 0
    while True:
        try:
            with transaction.atomic():
                entries = list(
                    StreamEntry.objects.select_for_update(nowait=True)
                    .filter(stream=stream, appended_at__isnull=True)
                    .order_by("position")[:batch_size]
                )
                if entries:
                    with tracer.start_as_current_span(
                        f"stream append {stream}", attributes={"messaging.batch.message_count": len(entries)}
                    ):
                        sink_for(stream).append(stream, entries)
                    StreamEntry.objects.filter(pk__in=[e.pk for e in entries]).update(appended_at=timezone.now())
        except OperationalError as exc:
            if "lock" not in str(exc).lower():
                raise
            return total  # another relay is appending this stream
        total += len(entries)
        if len(entries) < batch_size:
            return total


def stream_entries_prune(*, batch_size: int = PRUNE_BATCH_SIZE) -> int:
    """Delete appended entries older than ``STREAMS_ENTRY_RETENTION_DAYS`` whose outbox rows the
    cursor has passed (so they are never sequenced again); return how many went."""
    cutoff = timezone.now() - timedelta(days=settings.STREAMS_ENTRY_RETENTION_DAYS)
    below = stream_cursor().outbox_id
    pks = list(
        StreamEntry.objects.filter(appended_at__lt=cutoff, outbox_id__lte=below)
        .order_by("appended_at")
        .values_list("pk", flat=True)[:batch_size]
    )
    return StreamEntry.objects.filter(pk__in=pks).delete()[0] if pks else 0


def stream_relay_pass() -> int:
    """The relay's streams pass: sequence what committed, prune a batch of old entries, append;
    return how many entries were appended (what the pass sent).

    Sequencing never waits on a sink, so entries get their places during a sink outage too.
    """
    global _pruned_at  # noqa: PLW0603 (one relay process, one clock)
    stream_events_sequence()
    if time.monotonic() - _pruned_at >= PRUNE_INTERVAL:
        stream_entries_prune()
        _pruned_at = time.monotonic()
    return stream_entries_append()


__all__ = ["StreamSinkUnavailable", "stream_entries_append", "stream_entries_prune", "stream_relay_pass"]
