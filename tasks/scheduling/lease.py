"""The Beat lease: at most one active Beat, and the heartbeat that says whether it is alive.

The lock is a lease on the ``BeatHeartbeat`` row named ``BEAT_LEASE_NAME``: the active Beat
renews ``last_tick_at`` every second, and another Beat may take the row only when the lease is
older than ``BEAT_LOCK_TTL`` seconds. A row lease was chosen over a Redis lock or a PostgreSQL
advisory lock because it works on every broker (RabbitMQ too) and on SQLite, and because the
same row is the heartbeat the health check reads: the lock and the heartbeat can never
disagree. Both the renewal and the takeover are one conditional ``UPDATE`` with the database's
clock (``NOW()``), so two machines' clocks never compare. A standby tries once a second, so it
takes over within ``BEAT_LOCK_TTL`` + 1 s of a kill -9.

Every takeover increments the row's ``generation``: the fencing token a Beat must still hold
when it records a run (``tasks.scheduling.runs``), so a leader stalled past its lease (a long
query, a pause, ``SIGSTOP``) records nothing when it resumes. A Beat's identity is unique per
process start (host name, pid and a random part), so two containers with the same host name
and pid are never one leader.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

from django.db import DatabaseError, IntegrityError, InterfaceError, close_old_connections
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone

from tasks.models import BEAT_LEASE_NAME, BeatHeartbeat

logger = logging.getLogger(__name__)

RENEW_INTERVAL = 1.0  # seconds between lease renewals (= heartbeats)


class BeatLease:
    """This process's hold on the Beat lease. ``hold()`` once per tick; ``valid()`` before a send."""

    def __init__(self, *, ttl: float) -> None:
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.ttl = ttl
        self.generation = 0
        self.leader = False
        self.active_since: datetime.datetime | None = None
        self._valid_until = 0.0
        self._last_renew = 0.0
        self._next_attempt = 0.0
        self._standby_logged_for: str | None = None

    def hold(self) -> bool:  # noqa: PLR0911 (each outcome of the lease is one return)
        """Renew the lease, or try to take it; True while this process is the active Beat."""
        now = time.monotonic()
        if self.leader and now - self._last_renew < RENEW_INTERVAL and self.valid():
            return True
        if not self.leader and now < self._next_attempt:
            return False
        close_old_connections()
        try:
            if self.leader:
                renewed = BeatHeartbeat.objects.filter(
                    name=BEAT_LEASE_NAME, leader=self.identity, generation=self.generation
                ).update(last_tick_at=Now())
                if renewed:
                    self._renewed(now)
                    return True
                logger.warning("PlatformScheduler: %s lost the Beat lock; standing by", self.identity)
                self.leader = False
                return False
            self._next_attempt = now + RENEW_INTERVAL
            if self._try_acquire():
                self._renewed(now)
                self.leader = True
                self.active_since = timezone.now()
                self._standby_logged_for = None
                logger.info("PlatformScheduler: %s is now the active Beat", self.identity)
                return True
            self._log_standby()
            return False
        except (DatabaseError, InterfaceError):
            logger.exception("PlatformScheduler: database unavailable for the Beat lock")
            if self.leader and not self.valid():
                self.leader = False
            return self.leader and self.valid()

    def valid(self) -> bool:
        """True while this process holds an unexpired lease, by its own clock."""
        return self.leader and time.monotonic() < self._valid_until

    def release(self) -> None:
        """Give the lease up at once (a clean stop), so a standby takes over without waiting."""
        try:
            close_old_connections()
            BeatHeartbeat.objects.filter(name=BEAT_LEASE_NAME, leader=self.identity).update(leader="")
            logger.info("PlatformScheduler: %s released the Beat lock", self.identity)
        except (DatabaseError, InterfaceError):
            logger.exception("PlatformScheduler: could not release the Beat lock; it expires by itself")
        self.leader = False

    def _try_acquire(self) -> bool:
        if not BeatHeartbeat.objects.filter(name=BEAT_LEASE_NAME).exists():
            # Another Beat may create it first; then both compete for it below.
            with contextlib.suppress(IntegrityError):
                BeatHeartbeat.objects.create(name=BEAT_LEASE_NAME)
        expired = Now() - datetime.timedelta(seconds=self.ttl)
        taken = (
            BeatHeartbeat.objects.filter(name=BEAT_LEASE_NAME)
            .filter(Q(leader="") | Q(leader=self.identity) | Q(last_tick_at__isnull=True) | Q(last_tick_at__lt=expired))
            .update(leader=self.identity, started_at=Now(), last_tick_at=Now(), generation=F("generation") + 1)
        )
        if taken:
            # Read back at once: no other Beat can take a lease renewed a moment ago.
            self.generation = BeatHeartbeat.objects.filter(name=BEAT_LEASE_NAME, leader=self.identity).values_list(
                "generation", flat=True
            )[0]
        return bool(taken)

    def _renewed(self, started: float) -> None:
        self._last_renew = started
        # Counted from before the UPDATE, minus a margin, so the local view ends first.
        self._valid_until = started + self.ttl - RENEW_INTERVAL

    def _log_standby(self) -> None:
        holder = BeatHeartbeat.objects.filter(name=BEAT_LEASE_NAME).values_list("leader", flat=True).first() or ""
        if holder != self._standby_logged_for:
            logger.info("PlatformScheduler: %s standing by; the active Beat is %s", self.identity, holder)
            self._standby_logged_for = holder


@dataclass(frozen=True)
class BeatStatus:
    """The lease row as monitoring sees it."""

    leader: str
    started_at: datetime.datetime | None
    last_tick_at: datetime.datetime | None
    age_seconds: float | None
    """Seconds since the last tick; None when Beat never ticked."""


def beat_status(*, now: datetime.datetime | None = None) -> BeatStatus | None:
    """The Beat heartbeat row, or None when no Beat ever ran."""
    now = now or timezone.now()
    row = BeatHeartbeat.objects.filter(name=BEAT_LEASE_NAME).first()
    if row is None:
        return None
    age = max(0.0, (now - row.last_tick_at).total_seconds()) if row.last_tick_at else None
    return BeatStatus(leader=row.leader, started_at=row.started_at, last_tick_at=row.last_tick_at, age_seconds=age)


def beat_lateness(beat: BeatStatus | None, *, max_age: float) -> str:
    """Why Beat counts as late (no Beat ran, none holds the lock, its last tick is too old), or ""."""
    if beat is None or beat.age_seconds is None:
        return "Beat has never ticked (no heartbeat)"
    if not beat.leader:
        # A Beat that stops cleanly releases the lock: no Beat runs, however recent its last tick.
        return f"no Beat holds the lock (last tick {beat.age_seconds:.0f}s ago)"
    if beat.age_seconds > max_age:
        return f"last tick {beat.age_seconds:.0f}s ago (limit {max_age}s)"
    return ""
