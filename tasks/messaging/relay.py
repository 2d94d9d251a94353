"""The outbox relay: sends events whose commit hook could not reach the broker.

Rows still unsent after a grace period are dispatched oldest first, in batches. On PostgreSQL
the batch is locked with ``FOR UPDATE SKIP LOCKED``, so two relays never send one row twice.
The relay dispatches the async deliveries only: sync handlers ran in the committing process.
Each loop also runs the re-send sweeper it is given (``tasks.reliability.sweeper``, wired by
``manage.py relay_outbox``): one process, so one thing to deploy.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from tasks.messages import Message
from tasks.messaging.brokers import get_recording_broker
from tasks.messaging.deliveries import DispatchError, deliveries_publish, deliveries_record
from tasks.models import DeadLetter, Outbox

# The task name of dead letters made from unreadable outbox rows: requeueing one hands the row
# back to the relay.
OUTBOX_DEAD_LETTER_TASK = "tasks.outbox"

logger = logging.getLogger(__name__)


def outbox_relay_once(*, grace: timedelta | None = None, batch_size: int | None = None) -> int:
    """Dispatch one batch of unsent rows older than ``grace``; return how many were sent.

    The batch is claimed (marked sent, its deliveries recorded) and committed before anything
    is published: another relay skips it, and a worker always finds its Delivery row. If the
    broker then refuses, the claim is undone and DispatchError raised; if the relay dies in
    between, the recorded deliveries are re-sent by the sweeper. A row that cannot be read
    becomes a dead letter instead of holding up the queue.
    """
    grace = timedelta(seconds=settings.OUTBOX_RELAY_GRACE) if grace is None else grace
    batch_size = batch_size or settings.OUTBOX_RELAY_BATCH
    broker = get_recording_broker()
    with transaction.atomic():
        unsent = Outbox.objects.filter(sent_at__isnull=True, created_at__lte=timezone.now() - grace).order_by(
            "created_at"
        )
        if connection.features.has_select_for_update_skip_locked:
            unsent = unsent.select_for_update(skip_locked=True)
        plan, claimed = [], []
        for row in unsent[:batch_size]:
            try:
                message = Message.from_json(row.payload)
            except Exception as exc:
                _dead_letter_unreadable(row, exc)
                continue
            plan.extend((message, s) for s in broker.async_plan(message))
            claimed.append(row.pk)
        Outbox.objects.filter(pk__in=claimed).update(sent_at=timezone.now(), attempts=F("attempts") + 1)
        deliveries = deliveries_record(plan)
    try:
        deliveries_publish(deliveries)
    except DispatchError as exc:
        Outbox.objects.filter(pk__in=claimed).update(sent_at=None, last_error=str(exc)[:2000])
        raise
    if claimed:
        logger.info("relayed %d outbox rows", len(claimed))
    return len(claimed)


def _dead_letter_unreadable(row: Outbox, exc: Exception) -> None:
    """Take an unreadable row out of the queue, as a dead letter an operator can requeue once
    the code that reads it is deployed."""
    logger.error("outbox row %s cannot be read: %s", row.pk, exc)
    failure = DeadLetter.failure_fields(exc)
    DeadLetter.objects.create(
        task_name=OUTBOX_DEAD_LETTER_TASK,
        message_id=row.message_id,
        message_type=row.message_type,
        payload=row.payload,
        reason="unreadable",
        **failure,
    )
    Outbox.objects.filter(pk=row.pk).update(
        sent_at=failure["last_failed_at"], attempts=F("attempts") + 1, last_error=f"unreadable: {exc}"[:2000]
    )


class Relay:
    """The long-running relay loop: outbox rows, then ``resend`` (stale deliveries), until SIGTERM.

    While the broker is down it backs off exponentially (up to 30 s) instead of spinning.
    """

    max_backoff = 30.0

    def __init__(self, *, resend: Callable[[], int], interval: float | None = None) -> None:
        self.resend = resend
        self.interval = settings.OUTBOX_RELAY_INTERVAL if interval is None else interval
        self._stop = threading.Event()

    def stop(self, *_: object) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run_once(self) -> int:
        """One pass: drain the outbox in batches, then re-send stale deliveries."""
        total = 0
        while not self._stop.is_set():
            sent = outbox_relay_once()
            total += sent
            if sent < settings.OUTBOX_RELAY_BATCH:
                break
        return total + self.resend()

    def _longer(self, backoff: float) -> float:
        return min(max(backoff * 2, 1.0), self.max_backoff)

    def run_forever(self) -> None:
        backoff = self.interval
        logger.info("outbox relay started")
        while not self._stop.is_set():
            try:
                self.run_once()
                backoff = self.interval
            except DispatchError:
                backoff = self._longer(backoff)
                logger.warning("broker unavailable; relay retries in %.0f s", backoff)
            except Exception:
                backoff = self._longer(backoff)
                logger.exception("relay pass failed")
            finally:
                # A long-lived process must not keep a broken connection or a stale snapshot.
                connection.close_if_unusable_or_obsolete()
            self._stop.wait(backoff)
        logger.info("outbox relay stopped")
