"""The in-memory mirror of the schedule table, mixed into ``PlatformScheduler``.

The stock scheduler re-reads every enabled row whenever anything changes and compares the
whole schedule on every tick. This mirror keeps an in-memory heap and, once a second, reads one
row (``PeriodicTasks.last_update``). When that moved, it reads the rows whose ``date_changed``
is recent and the ids of enabled rows (deletes and ``update(enabled=...)``), and re-heaps only
the entries that differ. A change it cannot see per row (a schedule row edited, or
``update()`` of other fields followed by ``update_changed()``) falls back to a full diff, as
does a safety re-read every five minutes.
"""

from __future__ import annotations

import datetime
import heapq
import logging
import time
from typing import Any

from celery.beat import event_t
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks
from django_celery_beat.schedulers import SCHEDULE_SYNC_MAX_INTERVAL

from tasks.scheduling.entry import PlatformEntry, row_fingerprint

logger = logging.getLogger(__name__)

CHANGE_CHECK_INTERVAL = 1.0  # seconds between reads of PeriodicTasks.last_update
# Rows changed this long before the previous check are read again: covers a transaction that
# committed late, and clocks of web machines a little apart.
CHANGE_LOOKBACK = datetime.timedelta(seconds=60)
HEAP_PRIORITY = 5


class ScheduleMirror:
    """The schedule by name, its heap of due times, and how both follow the table.

    Meant for a ``celery.beat.Scheduler`` subclass: it uses the scheduler's ``Entry``, ``app``,
    ``populate_heap``, ``_when``, ``_is_due_failed`` and ``_dirty``.
    """

    Entry: type[PlatformEntry]
    app: Any
    _dirty: set[str]

    def _mirror_reset(self) -> None:
        self._schedule: dict[str, PlatformEntry] = {}
        self._names_by_id: dict[int, str] = {}
        self._heap: list | None = None
        self._next_change_check = 0.0
        self._last_full_reload = 0.0
        self._last_change_seen: datetime.datetime | None = None
        self._changes_checked_at: datetime.datetime | None = None

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
