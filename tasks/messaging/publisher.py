"""The per-process publisher: committed events go to the broker from a thread of their own.

A commit hands its recorded deliveries (and its outbox row id) to ``publisher_submit`` and
returns: it never waits on the broker, whether the broker answers, refuses, hangs or drops
packets. The publisher thread takes everything handed to it since its last send, publishes it
in one pipelined batch and marks the outbox rows sent in one statement, so a burst of commits
costs a few round trips instead of several per event.

What the thread cannot send is left where the commit recorded it, never retried from memory:
the outbox row stays unsent and the relay sends it after ``OUTBOX_RELAY_GRACE``; a Delivery
row with no outbox row (``broker.publish()`` in a transaction) stays pending for the sweeper.
So a failed send, a full queue and a process that dies with events still queued lose nothing.
After a failed send the publisher stops trying for a while (doubling up to
``OUTBOX_PUBLISHER_BACKOFF_MAX``) and hands new commits straight to the relay, instead of
queueing behind a broker that hangs.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from celery.signals import worker_process_shutdown
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tasks.messages import Message
from tasks.messaging.deliveries import DispatchError, deliveries_publish, deliveries_record
from tasks.messaging.round_trips import execute_with_async_commit
from tasks.messaging.subscriptions import Subscription
from tasks.models import Delivery, Outbox

logger = logging.getLogger(__name__)


def outbox_mark_sent(*, outbox_ids: list[int]) -> None:
    """Mark rows sent, without waiting for the disk: a mark lost in a crash only makes the
    relay send the event again, which idempotent deliveries absorb."""
    if not outbox_ids:
        return  # "IN ()" is not SQL
    execute_with_async_commit(
        f"UPDATE {Outbox._meta.db_table} SET sent_at = %s WHERE id IN ({', '.join(['%s'] * len(outbox_ids))})",  # noqa: S608 (table from the model, values bound)
        [timezone.now(), *outbox_ids],
    )


@dataclass
class _Batch:
    commits: int = 0
    outbox_ids: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)


class Publisher:
    """A queue of committed work and the thread that sends it; see the module docstring.

    ``send`` and ``mark_sent`` are the broker and database steps (injectable for tests).
    """

    def __init__(
        self,
        *,
        send: Callable[[list[Delivery]], None] | None = None,
        mark_sent: Callable[[list[int]], None] | None = None,
        queue_limit: int | None = None,
        batch_size: int | None = None,
        backoff_max: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Looked up at each call, not bound here, so tests can wrap the module's functions.
        self._send = send or (lambda rows: deliveries_publish(rows))  # noqa: PLW0108 (late binding)
        self._mark_sent = mark_sent or (lambda ids: outbox_mark_sent(outbox_ids=ids))
        self._queue_limit = queue_limit or settings.OUTBOX_PUBLISHER_QUEUE_LIMIT
        self._batch_size = batch_size or settings.OUTBOX_RELAY_BATCH
        self._backoff_max = settings.OUTBOX_PUBLISHER_BACKOFF_MAX if backoff_max is None else backoff_max
        self._clock = clock
        self._changed = threading.Condition()
        self._queue: deque[tuple[int | None, list[Delivery]]] = deque()
        self._queued = 0  # deliveries (or bare outbox marks) waiting
        self._sending = False
        self._backoff = 0.0
        self._paused_until = 0.0
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0  # handed to the relay or sweeper instead of sent: for tests and logs

    def submit(self, *, outbox_id: int | None, deliveries: list[Delivery]) -> bool:
        """Queue one commit's work for the thread; False when it is left to the relay instead
        (a recent send failed, or the queue is full). Never blocks on the broker."""
        size = max(len(deliveries), 1)
        with self._changed:
            if self._closed or self._clock() < self._paused_until or self._queued + size > self._queue_limit:
                self.dropped += 1
                return False
            self._queue.append((outbox_id, deliveries))
            self._queued += size
            self._ensure_thread()
            self._changed.notify_all()
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued was sent or given up; False if ``timeout`` passed first.
        For processes about to exit (their queue is otherwise left to the relay) and for tests."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._queue or self._sending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def close(self, timeout: float) -> bool:
        """Flush, then end the thread; later submits are left to the relay. False if the
        flush timed out (what is left stays in the outbox)."""
        flushed = self.flush(timeout)
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        return flushed

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)
            self._thread.start()

    def _take(self) -> _Batch:
        # Called with the lock held, the queue not empty. Whole commits only: an event's
        # deliveries go out together.
        batch = _Batch()
        while self._queue and (not batch.deliveries or len(batch.deliveries) < self._batch_size):
            outbox_id, deliveries = self._queue.popleft()
            self._queued -= max(len(deliveries), 1)
            batch.commits += 1
            if outbox_id is not None:
                batch.outbox_ids.append(outbox_id)
            batch.deliveries.extend(deliveries)
        return batch

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue:
                    self._sending = False
                    self._changed.notify_all()
                    if self._closed:
                        connection.close()  # this thread's own
                        return
                    self._changed.wait()
                self._sending = True
                batch = self._take()
            self._send_batch(batch)

    def _send_batch(self, batch: _Batch) -> None:
        try:
            if batch.deliveries:
                self._send(batch.deliveries)
                self._backoff = 0.0  # only a send says the broker is back
        except Exception as exc:
            if not isinstance(exc, DispatchError):  # a DispatchError is logged where it is raised
                logger.exception("publishing committed events failed")
            self._give_up(batch)
            return
        try:
            self._mark_sent(batch.outbox_ids)
        except Exception:
            # Sent but not marked: the relay sends them again, which the deliveries absorb.
            logger.exception("marking %d outbox rows sent failed", len(batch.outbox_ids))
        finally:
            # A long-lived thread must not keep a broken connection.
            connection.close_if_unusable_or_obsolete()

    def _give_up(self, batch: _Batch) -> None:
        """Leave this batch and everything queued behind it to the relay, and take no more for
        a while: queueing behind a broker that hangs would only delay what the relay sends."""
        self._backoff = min(max(self._backoff * 2, 1.0), self._backoff_max)
        with self._changed:
            left = batch.commits + len(self._queue)
            self._queue.clear()
            self._queued = 0
            self._paused_until = self._clock() + self._backoff
            self.dropped += left
        logger.warning("%d committed events left to the relay; publishing again in %.0f s", left, self._backoff)


_publisher: tuple[int, Publisher] | None = None
_publisher_lock = threading.Lock()


def get_publisher() -> Publisher:
    """This process's publisher; a new one after a fork (threads do not survive it)."""
    global _publisher  # noqa: PLW0603 (a per-process singleton)
    with _publisher_lock:
        if _publisher is None or _publisher[0] != os.getpid():
            _publisher = (os.getpid(), Publisher())
            atexit.register(publisher_flush)
        return _publisher[1]


def deliveries_record_and_publish(plan: Iterable[tuple[Message, Subscription]]) -> int:
    """Record and publish one delivery task per (message, subscription); return how many.

    The records commit before the tasks are published, so a worker always finds its row.
    Inside a transaction the rows go to the publisher after the commit (dropped on rollback);
    outside one they are published at once, and a broker that refuses raises DispatchError.
    Either way an unsent row stays pending and the sweeper sends it again.
    """
    rows = deliveries_record(plan)
    if not rows:
        return 0
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(functools.partial(publisher_submit, outbox_id=None, deliveries=rows))
    else:
        deliveries_publish(rows)
    return len(rows)


def publisher_submit(*, outbox_id: int | None, deliveries: list[Delivery]) -> bool:
    """Hand one commit's recorded deliveries (and its outbox row, marked sent once they are on
    the broker) to this process's publisher; see ``Publisher.submit``."""
    return get_publisher().submit(outbox_id=outbox_id, deliveries=deliveries)


def publisher_flush(timeout: float | None = None) -> bool:
    """Wait for this process's publisher to send what it holds (``OUTBOX_PUBLISHER_EXIT_WAIT``
    by default); what it cannot send in time is left to the relay."""
    timeout = settings.OUTBOX_PUBLISHER_EXIT_WAIT if timeout is None else timeout
    current = _publisher
    if current is None or current[0] != os.getpid():
        return True
    return current[1].flush(timeout)


def _flush_on_worker_process_exit(**_: object) -> None:
    publisher_flush()


def connect() -> None:
    """Flush the publisher when a Celery pool process exits: billiard ends its processes with
    ``os._exit``, which skips ``atexit``."""
    worker_process_shutdown.connect(_flush_on_worker_process_exit, weak=False)
