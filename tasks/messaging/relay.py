"""The outbox relay: sends events the committing process could not get to the broker.

Rows still unsent after a grace period are dispatched oldest first, in batches. On PostgreSQL
the batch is locked with ``FOR UPDATE SKIP LOCKED``, so two relays never send one row twice.
The relay dispatches the async deliveries only: sync handlers ran in the committing process.
Each loop also runs the passes it is given (the re-send sweeper, the re-planning of deliveries
whose predicate failed, from ``tasks.reliability``, wired by ``manage.py relay_outbox``): one
process, so one thing to deploy. Each pass fails and backs off alone.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone

from tasks.messages import Message
from tasks.messaging.brokers import Broker, get_recording_broker
from tasks.messaging.deliveries import (
    DispatchError,
    deliveries_insert,
    deliveries_plan,
    deliveries_publish_each,
    deliveries_to_send,
)
from tasks.models import DeadLetter, Delivery, Outbox

# The task name of dead letters made from unreadable outbox rows: requeueing one hands the row
# back to the relay.
OUTBOX_DEAD_LETTER_TASK = "tasks.outbox"

logger = logging.getLogger(__name__)


def outbox_relay_once(*, grace: timedelta | None = None, batch_size: int | None = None) -> int:
    """Dispatch one batch of unsent rows older than ``grace``; return how many were sent.

    The batch is claimed (marked sent, its deliveries recorded) and committed before anything
    is published: another relay skips it, and a worker always finds its Delivery row. If the
    broker is unavailable, the claim is undone and DispatchError raised; if the relay dies in
    between, the recorded deliveries are re-sent by the sweeper.

    Rows fail alone: a row that cannot be read becomes a dead letter at once; a row that cannot
    be planned or recorded keeps its error (``last_error``, ``attempts``) and is tried again by
    the next pass, and after ``RELAY_ROW_MAX_FAILURES`` becomes a dead letter; a delivery the
    broker refuses for itself keeps its error and is left to the sweeper. The others go out.
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
        planned: dict[int, list[Delivery]] = {}
        for row in unsent[:batch_size]:
            try:
                message = Message.from_json(row.payload)
            except Exception as exc:
                _dead_letter_unreadable(row, exc)
                continue
            try:
                # A savepoint where a predicate runs: its database error stays with its row. Not
                # for the others: two statements per row were half of a catch-up's queries.
                with transaction.atomic() if _runs_predicates(broker, message) else contextlib.nullcontext():
                    planned[row.pk] = deliveries_plan(
                        message, broker.async_plan(message), trace_context=row.trace_context
                    )
            except Exception as exc:
                outbox_row_failed(row, exc)
        recorded = _record(planned)
        Outbox.objects.filter(pk__in=list(recorded)).update(sent_at=timezone.now(), attempts=F("attempts") + 1)
    to_send = _as_recorded(d for rows in recorded.values() for d in rows)
    try:
        refused = deliveries_publish_each(to_send)
    except DispatchError as exc:
        # The broker's fault, not the rows': the attempt is given back, the error kept.
        Outbox.objects.filter(pk__in=list(recorded)).update(
            sent_at=None, attempts=F("attempts") - 1, last_error=str(exc)[:2000]
        )
        raise
    for delivery, exc in refused:
        # Recorded, so not lost: the sweeper sends it again, counting its failures.
        Delivery.objects.filter(message_id=delivery.message_id, handler=delivery.handler).update(
            last_error=f"send failed: {type(exc).__name__}: {exc}"[:2000]
        )
    if recorded:
        logger.info("relayed %d outbox rows", len(recorded))
    return len(recorded)


def _runs_predicates(broker: Broker, message: Message) -> bool:
    """Whether planning ``message`` runs a predicate (code that may query the database)."""
    return any(
        s.is_async and s.predicate is not None and isinstance(message, s.message_type) for s in broker.subscriptions()
    )


def _as_recorded(planned: Iterable[Delivery]) -> list[Delivery]:
    """The pending rows to send, as the database has them. A key recorded before (by the commit
    that could not reach the broker) keeps its first row and task id, so what the relay sends is
    what the sweeper looks for in the broker; a delivery already running or done is not sent."""
    keys = {(d.message_id, d.handler) for d in deliveries_to_send(planned)}
    if not keys:
        return []
    stored = Delivery.objects.filter(message_id__in={m for m, _ in keys}, status=Delivery.Status.PENDING).order_by("pk")
    return [row for row in stored if (row.message_id, row.handler) in keys]


def _record(planned: dict[int, list[Delivery]]) -> dict[int, list[Delivery]]:
    """Insert the planned deliveries (the first record of a key wins); the rows whose insert
    failed are recorded as failed and left out. One INSERT for the batch; per row on error."""
    try:
        with transaction.atomic():
            deliveries_insert([d for rows in planned.values() for d in rows])
        return planned
    except DatabaseError:
        pass
    recorded = {}
    rows = Outbox.objects.in_bulk(list(planned))
    for pk, deliveries in planned.items():
        try:
            with transaction.atomic():
                deliveries_insert(deliveries)
            recorded[pk] = deliveries
        except DatabaseError as exc:
            outbox_row_failed(rows[pk], exc)
    return recorded


def outbox_row_failed(row: Outbox, exc: Exception) -> None:
    """One row could not be relayed for a reason of its own: keep the error and count the try;
    after ``RELAY_ROW_MAX_FAILURES`` tries it becomes a dead letter instead of holding a place
    at the head of the queue."""
    error = f"{type(exc).__name__}: {exc}"[:2000]
    logger.warning("outbox row %s cannot be relayed: %s", row.pk, error)
    if row.attempts + 1 < settings.RELAY_ROW_MAX_FAILURES:
        Outbox.objects.filter(pk=row.pk).update(attempts=F("attempts") + 1, last_error=error)
        return
    _dead_letter_row(row, exc, reason="relay failed", error=error)


def _dead_letter_unreadable(row: Outbox, exc: Exception) -> None:
    """Take an unreadable row out of the queue, as a dead letter an operator can requeue once
    the code that reads it is deployed."""
    logger.error("outbox row %s cannot be read: %s", row.pk, exc)
    _dead_letter_row(row, exc, reason="unreadable", error=f"unreadable: {exc}"[:2000])


def _dead_letter_row(row: Outbox, exc: Exception, *, reason: str, error: str) -> None:
    failure = DeadLetter.failure_fields(exc)
    DeadLetter.objects.create(
        task_name=OUTBOX_DEAD_LETTER_TASK,
        message_id=row.message_id,
        message_type=row.message_type,
        payload=row.payload,
        reason=reason,
        **failure,
    )
    Outbox.objects.filter(pk=row.pk).update(
        sent_at=failure["last_failed_at"], attempts=F("attempts") + 1, last_error=error
    )


@dataclass
class RelayPass:
    """One of the relay's passes, with its own backoff: a failing pass never skips another."""

    name: str
    run: Callable[[], int]
    next_at: float = 0.0
    backoff: float = 0.0


class Relay:
    """The long-running relay loop until SIGTERM: the outbox pass (unsent rows), ``resend`` (the
    sweeper: deliveries the broker lost), ``replan`` (deliveries whose predicate failed) and
    ``scheduled`` (Beat's recorded runs the broker refused).

    Each pass has its own error handling and backoff: a broker outage (DispatchError) or an error
    in one pass backs that pass off exponentially (up to 30 s) and never stops the others.
    """

    max_backoff = 30.0

    def __init__(
        self,
        *,
        resend: Callable[[], int],
        replan: Callable[[], int] | None = None,
        scheduled: Callable[[], int] | None = None,
        extra: Iterable[tuple[str, Callable[[], int]]] = (),
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = settings.OUTBOX_RELAY_INTERVAL if interval is None else interval
        self.clock = clock
        self.passes = [RelayPass("outbox", self.drain_outbox), RelayPass("resend", resend)]
        if replan is not None:
            self.passes.append(RelayPass("replan", replan))
        if scheduled is not None:
            self.passes.append(RelayPass("scheduled runs", scheduled))
        # Passes of later capabilities (the streams pass), by name: the relay needs no import of them.
        self.passes.extend(RelayPass(name, run) for name, run in extra)
        self._stop = threading.Event()

    def stop(self, *_: object) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def drain_outbox(self) -> int:
        """The outbox pass: batches until a short one."""
        total = 0
        while not self._stop.is_set():
            sent = outbox_relay_once()
            total += sent
            if sent < settings.OUTBOX_RELAY_BATCH:
                break
        return total

    def run_once(self) -> int:
        """Each pass once, whatever the others did; the first error is raised after all ran."""
        total, errors = 0, []
        for relay_pass in self.passes:
            try:
                total += relay_pass.run()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return total

    def _longer(self, backoff: float) -> float:
        return min(max(backoff * 2, 1.0), self.max_backoff)

    def _run_pass(self, relay_pass: RelayPass) -> None:
        try:
            relay_pass.run()
            relay_pass.backoff = self.interval
        except DispatchError:
            relay_pass.backoff = self._longer(relay_pass.backoff)
            logger.warning("broker unavailable; relay %s pass retries in %.0f s", relay_pass.name, relay_pass.backoff)
        except Exception:
            relay_pass.backoff = self._longer(relay_pass.backoff)
            logger.exception("relay %s pass failed; retries in %.0f s", relay_pass.name, relay_pass.backoff)
        finally:
            # A long-lived process must not keep a broken connection or a stale snapshot.
            connection.close_if_unusable_or_obsolete()
        relay_pass.next_at = self.clock() + relay_pass.backoff

    def run_forever(self) -> None:
        logger.info("outbox relay started")
        for relay_pass in self.passes:
            relay_pass.backoff = self.interval
        while not self._stop.is_set():
            for relay_pass in self.passes:
                if self.clock() >= relay_pass.next_at and not self._stop.is_set():
                    self._run_pass(relay_pass)
            self._stop.wait(max(0.0, min(p.next_at for p in self.passes) - self.clock()))
        logger.info("outbox relay stopped")
