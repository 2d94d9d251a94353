"""Rate and concurrency limits per handler and key, across every worker on every host.

Declared next to the handler, changed by operators in the admin (``FlowLimit`` overrides)::

    broker.subscribe_async(ComponentPublished, notify_partner, rate_limit="10/second")
    broker.subscribe_async(ComponentRated, recount, rate_limit="60/minute", rate_key=lambda e: f"author:{e.author_id}")
    broker.subscribe_async(ComponentUploaded, scan, concurrency=2, concurrency_key=lambda e: f"author:{e.author_id}")

A worker asks before it starts a limited job (``delivery_admit``):

- **concurrency**: under a lock of the handler and key (a PostgreSQL advisory lock; SQLite's
  write lock), it counts the key's running deliveries; below the limit, and with no earlier job
  of the key waiting, it marks its own running in the same transaction, so two workers can
  never both take the last slot. Otherwise the delivery waits, in id order.
- **rate**: a hit on a moving window in Redis (the ``limits`` library), shared by every worker:
  at most N starts in any period. Over it, the delivery waits until the window has room.

A waiting delivery is a row in the database (status ``waiting``): the worker acks its message and
goes on with other work, holding no slot, sleeping nowhere, and nothing is failed. The relay's
``waiting`` pass (``deliveries_release_allowed``) releases waiting rows, oldest first, as their
limits allow, and publishes them; the worker checks again when it gets one (the check is what
holds, the release only keeps the queue from filling with jobs that would wait again).
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from tasks.messages import Message
from tasks.messaging.brokers import async_subscription_by_handler
from tasks.messaging.deliveries import deliveries_publish_released
from tasks.messaging.flow_limit_overrides import FlowLimits, flow_limits_in_force
from tasks.messaging.subscriptions import Subscription
from tasks.models import Delivery
from tasks.reliability.delivery_state import (
    deliveries_release_waiting,
    deliveries_wait_again,
    delivery_claim,
    delivery_wait,
)

logger = logging.getLogger(__name__)

Status = Delivery.Status
KEY_MAX = Delivery._meta.get_field("concurrency_key").max_length
# The rate windows' namespace in Redis: one per handler and key.
RATE_NAMESPACE = "job"


@lru_cache(maxsize=4)
def _limiter(url: str) -> MovingWindowRateLimiter:
    # A hung Redis must not hang a worker: after a second the job waits in the database instead.
    storage = RedisStorage(url, key_prefix="flow", socket_timeout=1, socket_connect_timeout=1, wrap_exceptions=True)
    return MovingWindowRateLimiter(storage)


def rate_limiter() -> MovingWindowRateLimiter:
    """The moving-window limiter on ``FLOW_LIMITS_REDIS_URL``, shared by every worker."""
    return _limiter(settings.FLOW_LIMITS_REDIS_URL)


def _key(function, message: Message, what: str) -> str:
    if function is None:
        return ""
    key = str(function(message))
    if len(key) > KEY_MAX:
        raise ValueError(f"the {what} {key[:40]}... is longer than {KEY_MAX} characters")
    return key


def delivery_admit(*, message: Message, subscription: Subscription, handler: str) -> bool:
    """Whether this worker may start the delivery of ``message`` to ``handler`` now; when not,
    it was made to wait (status ``waiting``) and the relay releases it when its limits allow.

    A delivery that is not pending or running (done, cancelled, another copy's) is admitted:
    ``delivery_start`` then finds it not startable.
    """
    limits = flow_limits_in_force(subscription)
    if not limits:
        return True
    row = Delivery.objects.filter(message_id=message.message_id, handler=handler).values_list("pk", "status").first()
    if row is None or row[1] not in (Status.PENDING, Status.RUNNING):
        return True
    pk = row[0]
    if limits.concurrency and not _concurrency_admit(
        pk=pk,
        handler=handler,
        key=_key(subscription.concurrency_key, message, "concurrency key"),
        limit=limits.concurrency,
    ):
        logger.info("over its concurrency limit (%d per key); waits for a slot", limits.concurrency)
        return False
    if limits.rate:
        key = _key(subscription.rate_key, message, "rate key")
        until = _rate_wait_until(limits, handler=subscription.handler_path, key=key)
        if until is not None:
            delivery_wait(pk=pk, run_after=until, rate_key=key)
            logger.info("over its rate limit (%s); waits until %s", limits.rate, until.isoformat())
            return False
    return True


def _concurrency_admit(*, pk: int, handler: str, key: str, limit: int) -> bool:
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # Two workers counting the same key serialise here; SQLite's IMMEDIATE
                # transactions already do.
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_lock_id(handler), _lock_id(key)])
        peers = Delivery.objects.filter(handler=handler, concurrency_key=key).exclude(pk=pk)
        running = peers.filter(status=Status.RUNNING).count()
        ahead = peers.filter(status=Status.WAITING, run_after__isnull=True, pk__lt=pk).exists()
        if running < limit and not ahead:
            return delivery_claim(pk=pk, concurrency_key=key)
        delivery_wait(pk=pk, run_after=None, concurrency_key=key)
        return False


def _lock_id(text: str) -> int:
    # A signed 32-bit key for pg_advisory_xact_lock(int, int).
    return zlib.crc32(text.encode()) - 2**31


def _rate_wait_until(limits: FlowLimits, *, handler: str, key: str) -> datetime | None:
    """None when a start is allowed now (and counted); else when to try again."""
    limiter = rate_limiter()
    try:
        if limiter.hit(limits.rate, RATE_NAMESPACE, handler, key):
            return None
        reset = limiter.get_window_stats(limits.rate, RATE_NAMESPACE, handler, key).reset_time
    except Exception:
        logger.warning("rate limit store unavailable; the job waits %.0f s", settings.FLOW_LIMITS_UNAVAILABLE_WAIT)
        return timezone.now() + timedelta(seconds=settings.FLOW_LIMITS_UNAVAILABLE_WAIT)
    return datetime.fromtimestamp(reset, tz=UTC)


def delivery_slot_free(*, message: Message, subscription: Subscription, handler: str) -> None:
    """After a concurrency-limited delivery ran (done, failed or stopped), release the next
    waiting one of its key at once, instead of leaving the slot empty until the relay's next
    pass. Never raises: the relay's pass does the same if this fails."""
    if not flow_limits_in_force(subscription).concurrency:
        return
    try:
        key = _key(subscription.concurrency_key, message, "concurrency key")
        deliveries_release_allowed(handler=handler, concurrency_key=key)
    except Exception:
        logger.warning("could not release the next waiting delivery of its key; the relay will", exc_info=True)


def deliveries_release_allowed(
    *, groups: int = 200, handler: str | None = None, concurrency_key: str | None = None
) -> int:
    """The relay's ``waiting`` pass: release waiting deliveries their limits now allow, oldest
    first per handler and key, and publish them; return how many were released. ``handler`` and
    ``concurrency_key`` narrow it to one key's waiting deliveries.

    Per key, a concurrency limit releases as many as it has free slots (running and released-
    not-started ones count as taken); a rate limit releases one period's worth of due rows and
    moves the rest of them a period on. A handler whose limits were removed releases all.
    Raises DispatchError when the broker is unavailable; the rows then wait again.
    """
    now = timezone.now()
    due = Q(run_after__isnull=True) | Q(run_after__lte=now)
    waiting = Delivery.objects.filter(due, status=Status.WAITING)
    if handler is not None:
        waiting = waiting.filter(handler=handler, concurrency_key=concurrency_key)
    released: list[Delivery] = []
    taken: dict[tuple[str, str], int] = defaultdict(int)
    with transaction.atomic():
        for path, ckey, rate_key in (
            waiting.order_by().values_list("handler", "concurrency_key", "rate_key").distinct()[:groups]
        ):
            subscription = async_subscription_by_handler(path)
            limits = flow_limits_in_force(subscription) if subscription else FlowLimits()
            group = waiting.filter(handler=path, concurrency_key=ckey, rate_key=rate_key)
            quota = None
            if limits.concurrency:
                if (path, ckey) not in taken:
                    taken[path, ckey] = Delivery.objects.filter(
                        handler=path, concurrency_key=ckey, status__in=(Status.RUNNING, Status.PENDING)
                    ).count()
                quota = max(0, limits.concurrency - taken[path, ckey])
            if limits.rate:
                quota = limits.rate.amount if quota is None else min(quota, limits.rate.amount)
            oldest = group.order_by("pk")
            if connection.features.has_select_for_update_skip_locked:
                oldest = oldest.select_for_update(skip_locked=True)  # another relay's rows
            rows = list(oldest[:quota] if quota is not None else oldest)
            if limits.concurrency:
                taken[path, ckey] += len(rows)
            if limits.rate:
                later = now + timedelta(seconds=limits.rate.get_expiry())
                group.filter(run_after__isnull=False).exclude(pk__in=[r.pk for r in rows]).update(run_after=later)
            released.extend(rows)
        deliveries_release_waiting(pks=[row.pk for row in released])
    if not released:
        return 0
    deliveries_publish_released(released, give_back=lambda pks: deliveries_wait_again(pks=pks))
    logger.info("released %d waiting deliveries", len(released))
    return len(released)
