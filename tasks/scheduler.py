"""``PlatformScheduler``: django-celery-beat's DatabaseScheduler, made safe to run twice and fast at scale.

``celery -A config beat -S tasks.scheduler:PlatformScheduler`` (the Procfile's ``beat``).
What it adds to the stock scheduler:

**One active Beat.** The lock is a lease on the ``BeatHeartbeat`` row (``name="beat"``): the
active Beat renews ``last_tick_at`` every second, and another Beat may take the row only
when the lease is older than ``BEAT_LOCK_TTL`` seconds. A row lease was chosen over a Redis
lock or a PostgreSQL advisory lock because it works on every broker (RabbitMQ too) and on
SQLite, and because the same row is the heartbeat the health check reads: the lock and the
heartbeat can never disagree. Both the renewal and the takeover are one conditional
``UPDATE`` with the database's clock (``NOW()``), so two machines' clocks never compare. A
standby tries once a second, so it takes over within ``BEAT_LOCK_TTL`` + 1 s of a kill -9;
the active Beat checks that its lease is still valid before every send and stands down
when it finds the row taken, so two Beats never send at once.

**Misfire and overlap policies** (``tasks.models.SchedulePolicy``, defaults when a task has
no policy row: run once, skip overlap). A run is *missed* when it fell due before this Beat
became active (Beat down, or between leaders). ``run_once`` sends one run for all missed
ones (Celery's own behaviour); ``skip`` drops them and waits for the next due time. With
overlap ``skip``, a due run is not sent while the previous run of the same schedule is
queued or running (its result row is ``STARTED``/``RETRY``, or the run this Beat sent has no
result yet); runs older than the task's hard time limit plus the broker's visibility
timeout are treated as lost, so a lost message never blocks a schedule for good.

**Scale.** The stock scheduler re-reads every enabled row whenever anything changes and
compares the whole schedule on every tick. This one keeps an in-memory heap and, once a
second, reads one row (``PeriodicTasks.last_update``). When that moved, it reads the rows
whose ``date_changed`` is recent and the ids of enabled rows (deletes and ``update(enabled=
...)``), and re-heaps only the entries that differ. A change it cannot see per row (a
schedule row edited, or ``update()`` of other fields followed by ``update_changed()``) falls
back to a full diff, as does a safety re-read every five minutes. Beat's own bookkeeping
(``last_run_at``) is written with ``update()``, so it never looks like an operator's change.
"""

from __future__ import annotations

import contextlib
import datetime
import heapq
import logging
import os
import socket
import time
from typing import Any

from celery import states
from celery.beat import event_t
from celery.utils.time import maybe_make_aware
from django.conf import settings
from django.db import DatabaseError, IntegrityError, InterfaceError, close_old_connections
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks
from django_celery_beat.schedulers import SCHEDULE_SYNC_MAX_INTERVAL, DatabaseScheduler, ModelEntry
from django_celery_results.models import TaskResult

from tasks.models import BeatHeartbeat, SchedulePolicy
from tasks.schedule_history import schedule_change_context
from tasks.schedules import schedule_due_at

logger = logging.getLogger(__name__)

BEAT_LOCK_NAME = "beat"
RENEW_INTERVAL = 1.0  # seconds between lease renewals (= heartbeats)
CHANGE_CHECK_INTERVAL = 1.0  # seconds between reads of PeriodicTasks.last_update
# Rows changed this long before the previous check are read again: covers a transaction that
# committed late, and clocks of web machines a little apart.
CHANGE_LOOKBACK = datetime.timedelta(seconds=60)
# A due time this much before the Beat became active counts as missed.
MISFIRE_TOLERANCE = datetime.timedelta(seconds=1)
UNFINISHED_STATES = (states.STARTED, states.RETRY)
HEAP_PRIORITY = 5


def row_fingerprint(model: PeriodicTask) -> tuple:
    """Everything in a row (and its schedule and policy) that changes what Beat does with it.

    Comparing fingerprints is far cheaper than building entries (which parses crontabs and
    JSON), so the periodic full comparison builds entries only for rows that differ.
    """
    schedule = model.interval or model.crontab or model.solar or model.clocked
    schedule_key = (
        None
        if schedule is None
        else (type(schedule).__name__, *(str(getattr(schedule, f.attname)) for f in schedule._meta.concrete_fields))
    )
    try:
        policy = (model.policy.misfire, model.policy.overlap)
    except SchedulePolicy.DoesNotExist:
        policy = None
    return (
        model.name, model.task, model.args, model.kwargs, model.queue, model.exchange, model.routing_key,
        model.priority, model.headers, model.start_time, model.expires, model.expire_seconds, model.one_off,
        model.enabled, schedule_key, policy,
    )  # fmt: skip


class PlatformEntry(ModelEntry):
    """A schedule entry with its misfire and overlap policy and its last sent run."""

    def __init__(self, model: PeriodicTask, app: Any = None) -> None:
        # Never-run entries have no missed runs: their first due time is their first run.
        self.ran_before = model.last_run_at is not None
        super().__init__(model, app=app)
        try:
            policy = model.policy
        except SchedulePolicy.DoesNotExist:
            policy = None
        self.misfire = policy.misfire if policy else SchedulePolicy.Misfire.RUN_ONCE
        self.overlap = policy.overlap if policy else SchedulePolicy.Overlap.SKIP
        self.last_task_id: str | None = None
        self.last_sent_monotonic: float | None = None
        self.fingerprint: tuple | None = None

    def advanced(self, *, sent: bool) -> PlatformEntry:
        """The entry for the next run: last run now, one more run counted if one was sent."""
        self.model.last_run_at = self._default_now()
        if sent:
            self.model.total_run_count += 1
        following = self.__class__(self.model, app=self.app)
        following.last_task_id, following.last_sent_monotonic = self.last_task_id, self.last_sent_monotonic
        following.fingerprint = self.fingerprint
        return following

    def __next__(self) -> PlatformEntry:
        return self.advanced(sent=True)

    next = __next__

    def save(self) -> None:
        # update(), not save(): no date_changed bump, no signals, no history, no reload.
        PeriodicTask.objects.filter(pk=self.model.pk).update(
            last_run_at=self.model.last_run_at, total_run_count=self.model.total_run_count
        )

    def same_as(self, other: PlatformEntry) -> bool:
        """True when ``other`` (re-read from the database) would schedule exactly as this one."""
        try:
            equal = self.editable_fields_equal(other)
        except Exception:  # (a schedule type without __eq__ for this pair: treat as changed)
            equal = False
        mine, theirs = self.model, other.model
        return (
            equal
            and (self.misfire, self.overlap) == (other.misfire, other.overlap)
            and (mine.start_time, mine.expires, mine.one_off, mine.enabled)
            == (theirs.start_time, theirs.expires, theirs.one_off, theirs.enabled)
        )

    def due_at(self) -> datetime.datetime | None:
        """When the pending run fell (or falls) due, or None if it cannot be worked out."""
        try:
            return schedule_due_at(self.schedule, maybe_make_aware(self.last_run_at).astimezone(self.app.timezone))
        except Exception:  # (solar and custom schedules may not support it)
            return None


class PlatformScheduler(DatabaseScheduler):
    """DatabaseScheduler with a leader lease, misfire/overlap policies and incremental reloads."""

    Entry = PlatformEntry

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.lock_ttl = float(getattr(settings, "BEAT_LOCK_TTL", 5))
        self._leader = False
        self._active_since: datetime.datetime | None = None
        self._lease_valid_until = 0.0
        self._last_renew = 0.0
        self._next_lease_attempt = 0.0
        self._standby_logged_for: str | None = None
        self._schedule: dict[str, PlatformEntry] = {}
        self._names_by_id: dict[int, str] = {}
        self._heap: list | None = None
        self._next_change_check = 0.0
        self._last_full_reload = 0.0
        self._last_change_seen: datetime.datetime | None = None
        self._changes_checked_at: datetime.datetime | None = None
        super().__init__(*args, **kwargs)
        self.max_interval = kwargs.get("max_interval") or self.app.conf.beat_max_loop_interval or 1

    # --- Celery hooks ---------------------------------------------------------------
    def setup_schedule(self) -> None:
        # Nothing is read until this Beat holds the lease. Default entries
        # (celery.backend_cleanup) are declared in tasks.schedules and written by
        # sync_schedules, not re-created here over an operator's edit on every start.
        pass

    @property
    def schedule(self) -> dict[str, PlatformEntry]:
        return self._schedule

    @property
    def info(self) -> str:
        return f"    . lock: BeatHeartbeat {BEAT_LOCK_NAME!r}, ttl {self.lock_ttl:g}s, as {self.identity}"

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

    def _tick(self, event_t: Any, min: Any, heappop: Any, heappush: Any) -> float:
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
        if not self._lease_valid():
            return 0  # the next tick renews or stands down before anything is sent
        heappop(heap)
        following = self._run_due(entry)
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
            if self._leader:
                self._release_lease()

    # --- Sending with policies --------------------------------------------------------
    def _run_due(self, entry: PlatformEntry) -> PlatformEntry:
        reason = self._skip_reason(entry)
        if reason:
            logger.info("PlatformScheduler: skipping %s: %s", entry.name, reason)
            following = entry.advanced(sent=False)
            self._schedule[entry.name] = following
        else:
            following = self.reserve(entry)
            logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
            try:
                result = self.apply_async(entry, producer=self.producer, advance=False)
            except Exception:
                logger.exception("PlatformScheduler: could not send %s", entry.name)
            else:
                following.last_task_id = getattr(result, "id", None)
                following.last_sent_monotonic = time.monotonic()
                logger.info(
                    "PlatformScheduler: sent %s at %s id=%s",
                    entry.name,
                    timezone.now().isoformat(),
                    following.last_task_id,
                )
        self._persist(following)
        return following

    def _skip_reason(self, entry: PlatformEntry) -> str:
        if entry.ran_before and entry.misfire == SchedulePolicy.Misfire.SKIP and self._missed(entry):
            return "missed run (misfire policy skip)"
        if entry.overlap == SchedulePolicy.Overlap.SKIP and self._previous_run_unfinished(entry):
            return "previous run still running (overlap policy skip)"
        if entry.ran_before and self._missed(entry):
            logger.info("PlatformScheduler: catching up missed run of %s (misfire policy run_once)", entry.name)
        return ""

    def _missed(self, entry: PlatformEntry) -> bool:
        due = entry.due_at()
        return due is not None and self._active_since is not None and due < self._active_since - MISFIRE_TOLERANCE

    def _previous_run_unfinished(self, entry: PlatformEntry) -> bool:
        task = self.app.tasks.get(entry.task)
        if task is not None and task.ignore_result:
            return False  # no result rows to watch: overlap cannot be seen, so never block
        time_limit = (task.time_limit if task is not None else None) or self.app.conf.task_time_limit or 3600
        lost_after = time_limit + getattr(settings, "CELERY_VISIBILITY_TIMEOUT", 3600)
        try:
            if TaskResult.objects.filter(
                periodic_task_name=entry.name,
                status__in=UNFINISHED_STATES,
                date_done__gte=timezone.now() - datetime.timedelta(seconds=lost_after),
            ).exists():
                return True
            if entry.last_task_id and time.monotonic() - (entry.last_sent_monotonic or 0) < lost_after:
                status = TaskResult.objects.filter(task_id=entry.last_task_id).values_list("status", flat=True).first()
                # No row yet: the run this Beat sent is still queued.
                return status is None or status in UNFINISHED_STATES
        except (DatabaseError, InterfaceError):
            logger.exception("PlatformScheduler: could not check the previous run of %s; sending", entry.name)
        return False

    def _persist(self, entry: PlatformEntry) -> None:
        try:
            entry.save()
        except (DatabaseError, InterfaceError):
            logger.exception("PlatformScheduler: could not store last run of %s; retrying at sync", entry.name)
            self._dirty.add(entry.name)

    # --- The lease --------------------------------------------------------------------
    def _hold_lease(self) -> bool:  # noqa: PLR0911 (each outcome of the lease is one return)
        now = time.monotonic()
        if self._leader and now - self._last_renew < RENEW_INTERVAL and self._lease_valid():
            return True
        if not self._leader and now < self._next_lease_attempt:
            return False
        close_old_connections()
        try:
            if self._leader:
                if BeatHeartbeat.objects.filter(name=BEAT_LOCK_NAME, leader=self.identity).update(last_tick_at=Now()):
                    self._lease_renewed(now)
                    return True
                logger.warning("PlatformScheduler: %s lost the Beat lock; standing by", self.identity)
                self._stand_down()
                return False
            self._next_lease_attempt = now + RENEW_INTERVAL
            if self._try_acquire():
                self._lease_renewed(now)
                self._become_leader()
                return True
            self._log_standby()
            return False
        except (DatabaseError, InterfaceError):
            logger.exception("PlatformScheduler: database unavailable for the Beat lock")
            if self._leader and not self._lease_valid():
                self._stand_down()
            return self._leader and self._lease_valid()

    def _try_acquire(self) -> bool:
        if not BeatHeartbeat.objects.filter(name=BEAT_LOCK_NAME).exists():
            # Another Beat may create it first; then both compete for it below.
            with contextlib.suppress(IntegrityError):
                BeatHeartbeat.objects.create(name=BEAT_LOCK_NAME)
        expired = Now() - datetime.timedelta(seconds=self.lock_ttl)
        return bool(
            BeatHeartbeat.objects.filter(name=BEAT_LOCK_NAME)
            .filter(Q(leader="") | Q(leader=self.identity) | Q(last_tick_at__isnull=True) | Q(last_tick_at__lt=expired))
            .update(leader=self.identity, started_at=Now(), last_tick_at=Now())
        )

    def _lease_renewed(self, started: float) -> None:
        self._last_renew = started
        # Counted from before the UPDATE, minus a margin, so the local view ends first.
        self._lease_valid_until = started + self.lock_ttl - RENEW_INTERVAL

    def _lease_valid(self) -> bool:
        return self._leader and time.monotonic() < self._lease_valid_until

    def _become_leader(self) -> None:
        self._leader = True
        self._active_since = timezone.now()
        self._standby_logged_for = None
        self._schedule, self._names_by_id, self._heap = {}, {}, None
        logger.info("PlatformScheduler: %s is now the active Beat", self.identity)

    def _stand_down(self) -> None:
        self._leader = False
        self._schedule, self._names_by_id, self._heap = {}, {}, None
        self._dirty.clear()

    def _log_standby(self) -> None:
        holder = BeatHeartbeat.objects.filter(name=BEAT_LOCK_NAME).values_list("leader", flat=True).first() or ""
        if holder != self._standby_logged_for:
            logger.info("PlatformScheduler: %s standing by; the active Beat is %s", self.identity, holder)
            self._standby_logged_for = holder

    def _release_lease(self) -> None:
        try:
            close_old_connections()
            BeatHeartbeat.objects.filter(name=BEAT_LOCK_NAME, leader=self.identity).update(leader="")
            logger.info("PlatformScheduler: %s released the Beat lock", self.identity)
        except (DatabaseError, InterfaceError):
            logger.exception("PlatformScheduler: could not release the Beat lock; it expires by itself")
        self._leader = False

    # --- Reading the schedule ---------------------------------------------------------
    def _models(self) -> Any:
        return PeriodicTask.objects.select_related("interval", "crontab", "solar", "clocked", "policy")

    def _refresh(self) -> None:
        now = time.monotonic()
        if self._heap is None:
            self._full_reload(initial=True)
            return
        if now < self._next_change_check:
            return
        self._next_change_check = now + CHANGE_CHECK_INTERVAL
        if now - self._last_full_reload >= SCHEDULE_SYNC_MAX_INTERVAL:
            self._full_reload()
            return
        last_change = PeriodicTasks.last_change()
        if last_change is None or last_change == self._last_change_seen:
            return
        self._last_change_seen = last_change
        self._incremental_reload()
        if len(self._heap) > 2 * len(self._schedule) + 100:
            # Replaced entries leave stale heap events behind until their time comes; many
            # edits of rarely due schedules would let them pile up.
            self.populate_heap()

    def _full_reload(self, *, initial: bool = False) -> None:
        checked_at = timezone.now()
        self._last_change_seen = PeriodicTasks.last_change()
        models = list(self._models().filter(enabled=True))
        if initial:
            self._schedule, self._names_by_id = {}, {}
            for model in models:
                entry = self._entry_for(model)
                if entry is not None:
                    self._schedule[model.name] = entry
                    self._names_by_id[model.pk] = model.name
            self.populate_heap()
            logger.info("PlatformScheduler: loaded %d schedules", len(self._schedule))
        else:
            seen = {model.pk for model in models}
            changed = sum(self._upsert(model) for model in models)
            changed += sum(self._remove(pk) for pk in set(self._names_by_id) - seen)
            logger.info("PlatformScheduler: full re-read of %d schedules, %d changed", len(models), changed)
        self._changes_checked_at = checked_at
        self._last_full_reload = time.monotonic()

    def _incremental_reload(self) -> None:
        checked_at = timezone.now()
        since = (self._changes_checked_at or checked_at) - CHANGE_LOOKBACK
        changed_models = list(self._models().filter(date_changed__gte=since))
        enabled_ids = set(PeriodicTask.objects.filter(enabled=True).values_list("pk", flat=True))
        changed = 0
        for model in changed_models:
            changed += self._upsert(model) if model.enabled else self._remove(model.pk)
        read = {model.pk for model in changed_models}
        changed += sum(self._remove(pk) for pk in set(self._names_by_id) - enabled_ids)
        added = enabled_ids - set(self._names_by_id) - read
        if added:
            for model in self._models().filter(pk__in=added):
                changed += self._upsert(model)
        self._changes_checked_at = checked_at
        logger.info(
            "PlatformScheduler: schedule changed: read %d rows, %d entries changed",
            len(changed_models) + len(added),
            changed,
        )
        if not changed:
            # Something changed that no row shows (a crontab edited, update() without
            # date_changed): compare everything once.
            self._full_reload()

    def _entry_for(self, model: PeriodicTask) -> PlatformEntry | None:
        try:
            entry = self.Entry(model, app=self.app)
            entry.fingerprint = row_fingerprint(model)
            return entry
        except Exception:  # (a bad row must not stop Beat; the admin rejects new ones)
            logger.exception("PlatformScheduler: cannot schedule %s", model.name)
            return None

    def _upsert(self, model: PeriodicTask) -> int:
        old_name = self._names_by_id.get(model.pk)
        if old_name is not None and old_name != model.name:
            self._remove(model.pk)
        current = self._schedule.get(model.name)
        if current is not None and current.fingerprint == row_fingerprint(model):
            return 0
        entry = self._entry_for(model)
        if entry is None:
            return self._remove(model.pk)
        if current is not None and current.same_as(entry):
            current.fingerprint = entry.fingerprint  # a change Beat does not act on (description)
            return 0
        if current is not None:
            entry.last_task_id, entry.last_sent_monotonic = current.last_task_id, current.last_sent_monotonic
        self._schedule[model.name] = entry
        self._names_by_id[model.pk] = model.name
        try:
            is_due, delay = entry.is_due()
        except Exception:
            is_due, delay = self._is_due_failed(entry)
        heapq.heappush(self._heap, event_t(self._when(entry, 0 if is_due else delay), HEAP_PRIORITY, entry))
        logger.info("PlatformScheduler: %s %s", "updated" if current is not None else "added", model.name)
        return 1

    def _remove(self, pk: int) -> int:
        name = self._names_by_id.pop(pk, None)
        if name is None:
            return 0
        self._schedule.pop(name, None)
        self._dirty.discard(name)
        logger.info("PlatformScheduler: removed %s", name)
        return 1
