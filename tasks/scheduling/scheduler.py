"""``PlatformScheduler``: django-celery-beat's DatabaseScheduler, made safe to run twice and fast at scale.

``celery -A config beat -S tasks.scheduling.scheduler:PlatformScheduler`` (the Procfile's ``beat``).
This module is the scheduler's Celery hooks; what it adds to the stock scheduler lives beside it:

- **One active Beat** (``lease``): a lease on the ``BeatHeartbeat`` row. The active Beat checks
  that its lease is still valid before every send and stands down when it finds the row taken,
  so two Beats never send at once.
- **Misfire and overlap policies** (``policies``), per schedule (``SchedulePolicy``).
- **Runs recorded before they are sent** (``runs``): keyed by (schedule, due time), written only
  under the lease's fencing token; a broker outage delays a run, a database outage makes Beat
  wait, and no due time is sent twice.
- **Scale** (``mirror``): an in-memory heap kept in step with the table by reading only what
  changed. Beat's own bookkeeping (``last_run_at``) is written with ``update()``, so it never
  looks like an operator's change.
"""

from __future__ import annotations

import heapq
import logging
import time
from typing import Any

from celery.beat import event_t
from django.conf import settings
from django.db import DatabaseError, InterfaceError
from django.utils import timezone
from django_celery_beat.schedulers import DatabaseScheduler

from tasks.models import BEAT_LEASE_NAME
from tasks.scheduling.entry import PlatformEntry
from tasks.scheduling.history import schedule_change_context
from tasks.scheduling.lease import RENEW_INTERVAL, BeatLease
from tasks.scheduling.mirror import ScheduleMirror
from tasks.scheduling.next_run import run_expires
from tasks.scheduling.policies import skip_reason
from tasks.scheduling.runs import scheduled_run_record, scheduled_run_send, scheduled_run_unsent

logger = logging.getLogger(__name__)

RETRY_DELAY = 1.0  # seconds before a due run that could not be recorded is tried again


class PlatformScheduler(ScheduleMirror, DatabaseScheduler):
    """DatabaseScheduler with a leader lease, misfire/overlap policies and incremental reloads."""

    Entry = PlatformEntry

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lease = BeatLease(ttl=float(getattr(settings, "BEAT_LOCK_TTL", 5)))
        self._mirror_reset()
        super().__init__(*args, **kwargs)
        self.max_interval = kwargs.get("max_interval") or self.app.conf.beat_max_loop_interval or 1

    # --- Celery hooks ---------------------------------------------------------------
    def setup_schedule(self) -> None:
        # Nothing is read until this Beat holds the lease. Default entries
        # (celery.backend_cleanup) are declared in tasks.tasks and written by
        # sync_schedules, not re-created here over an operator's edit on every start.
        pass

    @property
    def schedule(self) -> dict[str, PlatformEntry]:
        return self._schedule

    @property
    def info(self) -> str:
        return f"    . lock: BeatHeartbeat {BEAT_LEASE_NAME!r}, ttl {self.lease.ttl:g}s, as {self.lease.identity}"

    def reserve(self, entry: PlatformEntry) -> PlatformEntry:
        following = entry.advanced(sent=True)
        self._schedule[entry.name] = following
        return following

    def tick(
        self, event_t: Any = event_t, min: Any = min, heappop: Any = heapq.heappop, heappush: Any = heapq.heappush
    ) -> float:
        """One pass: hold the lease, apply schedule changes, send (or skip) the first due entry."""
        # Beat saves a row itself only to disable an expired or finished one-off schedule.
        with schedule_change_context(source="beat"):
            return self._tick(event_t, min, heappop, heappush)

    def _tick(self, event_t: Any, min: Any, heappop: Any, heappush: Any) -> float:  # noqa: PLR0911 (one return per outcome)
        if not self._hold_lease():
            return min(RENEW_INTERVAL, self.max_interval)
        try:
            self._refresh()
        except (DatabaseError, InterfaceError):
            logger.exception("PlatformScheduler: could not read schedule changes; trying again")
        heap = self._heap
        # Entries replaced or removed by a reload stay in the heap until they reach the top.
        while heap and self._schedule.get(heap[0][2].name) is not heap[0][2]:
            heappop(heap)
        if not heap:
            return self.max_interval
        event = heap[0]
        entry: PlatformEntry = event[2]
        now = self._when(entry, 0)
        if event[0] > now:
            return min(event[0] - now, self.max_interval)
        try:
            is_due, next_time_to_run = self.is_due(entry)
        except Exception:  # (one broken entry must not stop the others)
            is_due, next_time_to_run = self._is_due_failed(entry)
        if not is_due:
            heappop(heap)
            delay = next_time_to_run if isinstance(next_time_to_run, int | float) else self.max_interval
            heappush(heap, event_t(self._when(entry, delay), event[1], entry))
            return 0 if heap[0][2] is not entry else min(self.adjust(delay), self.max_interval)
        if not self.lease.valid():
            return 0  # the next tick renews or stands down before anything is sent
        heappop(heap)
        following, wait = self._run_due(entry)
        if wait:
            # Nothing was recorded (database down, or the lease lost): the same run, a second later.
            heappush(heap, event_t(self._when(entry, RETRY_DELAY), event[1], entry))
            return min(RETRY_DELAY, self.max_interval)
        try:
            next_due, next_delay = following.is_due()
        except Exception:
            next_due, next_delay = self._is_due_failed(following)
        heappush(heap, event_t(self._when(following, 0 if next_due else next_delay), event[1], following))
        return 0

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.lease.leader:
                self.lease.release()

    def _hold_lease(self) -> bool:
        """Hold the lease; start from an empty mirror on becoming active, drop it on standing down."""
        was_leader = self.lease.leader
        held = self.lease.hold()
        if held != was_leader:
            self._mirror_reset()
            if not held:
                self._dirty.clear()
        return held

    def _run_due(self, entry: PlatformEntry) -> tuple[PlatformEntry, bool]:
        """Skip the due run, or record it under the lease and send it: (the next entry, wait).

        ``wait`` is True when nothing could be recorded (the database is down, or this Beat
        lost its lease): the run stays due, and nothing is ever sent without its record.
        """
        try:
            reason = skip_reason(entry, active_since=self.lease.active_since, app=self.app)
            if not reason and scheduled_run_unsent(entry.name):
                reason = "its previous run is not sent yet (the relay sends it when the broker is back)"
            if reason:
                logger.info("PlatformScheduler: skipping %s: %s", entry.name, reason)
                following = entry.advanced(sent=False)
                self._schedule[entry.name] = following
                self._persist(following)
                return following, False
            due_at = entry.due_at() or timezone.now().replace(microsecond=0)
            run, created = scheduled_run_record(
                lease=self.lease,
                periodic_task_name=entry.name,
                due_at=due_at,
                task=entry.task,
                args=list(entry.args),
                kwargs=dict(entry.kwargs),
                options={
                    **entry.options,
                    "expires": run_expires(entry.schedule, due_at, own=entry.options.get("expires")),
                    "headers": {**entry.options.get("headers", {}), "celery_beat_task": True},
                },
            )
        except (DatabaseError, InterfaceError):
            logger.exception("PlatformScheduler: database unavailable; %s waits for it", entry.name)
            return entry, True
        if run is None:
            logger.warning(
                "PlatformScheduler: %s lost the Beat lock before recording %s", self.lease.identity, entry.name
            )
            self.lease.leader = False
            self._mirror_reset()
            self._dirty.clear()
            return entry, True
        following = self.reserve(entry)
        if created:
            logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
            if scheduled_run_send(run_id=run.pk):
                following.last_task_id = run.task_id
                following.last_sent_monotonic = time.monotonic()
        else:
            logger.info(
                "PlatformScheduler: the run of %s due %s was recorded before; not again", entry.name, run.due_at
            )
        self._persist(following)
        return following, False

    def _persist(self, entry: PlatformEntry) -> None:
        try:
            entry.save()
        except (DatabaseError, InterfaceError):
            logger.exception("PlatformScheduler: could not store last run of %s; retrying at sync", entry.name)
            self._dirty.add(entry.name)
