"""The re-send sweeper: a delivery not done is sent again only if the broker lost it.

Why anything is lost: kombu takes a message off a Redis list and only a moment later records it
as unacknowledged, so a worker killed in between loses it; a send can fail. Handlers are
idempotent per (message_id, handler), but re-sending what the broker still holds multiplies the
queue (workers down for 15 minutes with 5,000 deliveries pending would leave several copies of
each), so the sweeper asks the broker first (``tasks.messaging.broker_presence``):

- Redis: a delivery whose task id is neither in its queue's lists nor in the unacked hash, in two
  atomic reads ``DELIVERY_LOST_CONFIRM_AFTER`` seconds apart, is lost (the pop-to-unacked gap
  lasts milliseconds). Deliveries are looked for ``DELIVERY_LOST_CHECK_AFTER`` seconds after
  they were sent, so a message lost in the gap runs again well within 2 minutes. A queue longer
  than ``DELIVERY_LOST_SCAN_MAX`` messages is not read (a backlog: looked at once it drains).
- RabbitMQ holds unacknowledged messages until the consumer's connection closes, then requeues
  them: nothing is lost in a gap, and no message can be looked at without taking it. Per queue
  at most ``pending deliveries - ready messages`` (that is unfinished - ready - running) of the
  deliveries sent ``DELIVERY_RESEND_AFTER`` ago are re-sent, oldest first.

A delivery the broker refuses for itself (a queue that no longer exists) fails alone: its error
is recorded, it is tried again with backoff, and after ``RELAY_ROW_MAX_FAILURES`` it becomes a
dead letter; the others are sent.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F
from django.utils import timezone

from tasks.messaging import broker_presence
from tasks.messaging.deliveries import DispatchError, broker_unavailable, deliveries_publish_each
from tasks.models import Delivery
from tasks.reliability.send_failures import delivery_send_failed

logger = logging.getLogger(__name__)

UNFINISHED = (Delivery.Status.PENDING, Delivery.Status.RUNNING)


def deliveries_resend_stale(
    *, older_than: timedelta | None = None, limit: int = 500, confirm_after: float | None = None
) -> int:
    """Send again the deliveries sent more than ``older_than`` ago, still not done, that the
    broker no longer holds (oldest first, at most ``limit``); return how many were sent.

    ``older_than`` defaults to ``DELIVERY_LOST_CHECK_AFTER`` on Redis and ``DELIVERY_RESEND_AFTER``
    elsewhere; ``confirm_after`` (``DELIVERY_LOST_CONFIRM_AFTER``) is the wait between the two
    looks at the broker. Raises DispatchError when the broker is unavailable.
    """
    confirm_after = settings.DELIVERY_LOST_CONFIRM_AFTER if confirm_after is None else confirm_after
    with broker_presence.broker_connection() as connection:  # connects at its first use
        redis = broker_presence.broker_driver(connection) == broker_presence.REDIS
        if older_than is None:
            older_than = timedelta(
                seconds=settings.DELIVERY_LOST_CHECK_AFTER if redis else settings.DELIVERY_RESEND_AFTER
            )
        cutoff = timezone.now() - older_than
        candidates = _candidates(cutoff)
        if not candidates:
            return 0
        look = _absent_on_redis if redis else _beyond_broker_counts
        try:
            lost = look(connection, candidates)
            if lost:
                time.sleep(confirm_after)
                lost = look(connection, lost) & lost  # absent (or countable) twice
        except Exception as exc:
            if broker_unavailable(exc):
                raise DispatchError(f"broker unavailable: {exc}") from exc
            raise
    # Read again after the second look: a delivery done in between was acknowledged after its
    # done mark committed, so it is excluded here.
    stale = list(
        Delivery.objects.filter(pk__in=lost, status__in=UNFINISHED, sent_at__lte=cutoff).order_by("sent_at")[:limit]
    )
    return _resend(stale)


def _candidates(cutoff) -> list[tuple[int, str, str]]:
    """(pk, task_id, queue) of unfinished deliveries sent before ``cutoff``, oldest first."""
    return list(
        Delivery.objects.filter(status__in=UNFINISHED, sent_at__lte=cutoff)
        .order_by("sent_at")
        .values_list("pk", "task_id", "queue")
    )


def _absent_on_redis(connection, candidates: list[tuple[int, str, str]] | set[int]) -> set[int]:
    rows = _rows(candidates)
    lengths = broker_presence.broker_queue_lengths(connection, {queue for _, _, queue in rows})
    # A queue too long to read cheaply is left for a later sweep: it holds a backlog (workers
    # down or slow), and what it lost is looked for once it has drained below the limit.
    readable = {queue for queue, length in lengths.items() if length <= settings.DELIVERY_LOST_SCAN_MAX}
    if readable != set(lengths):
        logger.info("queues %s too long to look for lost deliveries now", sorted(set(lengths) - readable))
    rows = [row for row in rows if row[2] in readable]
    held = broker_presence.broker_held_task_ids(connection, readable)
    return {pk for pk, task_id, _ in rows if task_id not in held}


def _beyond_broker_counts(connection, candidates: list[tuple[int, str, str]] | set[int]) -> set[int]:
    rows = _rows(candidates)
    queues = {queue for _, _, queue in rows}
    # Ready counts first, then pending: a message taken by a worker in between is still pending
    # in the database, so the difference never counts it as lost.
    ready = broker_presence.broker_ready_counts(connection, queues)
    pending = dict(
        Delivery.objects.filter(status=Delivery.Status.PENDING, queue__in=queues)
        .values_list("queue")
        .annotate(n=Count("pk"))
    )
    allowance = Counter({queue: max(0, pending.get(queue, 0) - ready.get(queue, 0)) for queue in queues})
    chosen = set()
    for pk, _, queue in rows:  # oldest first
        if allowance[queue] > 0:
            allowance[queue] -= 1
            chosen.add(pk)
    return chosen


def _rows(candidates: list[tuple[int, str, str]] | set[int]) -> list[tuple[int, str, str]]:
    if isinstance(candidates, set):  # the second look: the same rows, read again
        return list(
            Delivery.objects.filter(pk__in=candidates, status__in=UNFINISHED)
            .order_by("sent_at")
            .values_list("pk", "task_id", "queue")
        )
    return candidates


def _resend(stale: list[Delivery]) -> int:
    if not stale:
        return 0
    for row in stale:
        if not row.task_id:
            # A row a worker created for a message it received: its copy needs an id of its own,
            # or the next look could not find it and would send it again.
            row.task_id = str(uuid.uuid4())
            Delivery.objects.filter(pk=row.pk).update(task_id=row.task_id)
    failed = deliveries_publish_each(stale)
    for row, exc in failed:
        delivery_send_failed(delivery=row, exc=exc)
    failed_pks = {row.pk for row, _ in failed}
    sent = [row.pk for row in stale if row.pk not in failed_pks]
    Delivery.objects.filter(pk__in=sent).update(sent_at=timezone.now(), send_count=F("send_count") + 1, last_error="")
    if sent:
        logger.info("re-sent %d deliveries the broker no longer held", len(sent))
    return len(sent)


class StaleDeliverySweeper:
    """``deliveries_resend_stale`` for the relay loop: at most once per
    ``DELIVERY_LOST_CHECK_INTERVAL`` seconds, and the broker is asked only when some delivery is
    old enough to be looked for (one indexed EXISTS otherwise)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._next_at = 0.0

    def __call__(self) -> int:
        now = self.clock()
        if now < self._next_at:
            return 0
        self._next_at = now + settings.DELIVERY_LOST_CHECK_INTERVAL
        horizon = min(settings.DELIVERY_LOST_CHECK_AFTER, settings.DELIVERY_RESEND_AFTER)
        cutoff = timezone.now() - timedelta(seconds=horizon)
        if not Delivery.objects.filter(status__in=UNFINISHED, sent_at__lte=cutoff).exists():
            return 0
        return deliveries_resend_stale()
