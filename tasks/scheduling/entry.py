"""``PlatformEntry``: one schedule in Beat's memory, with its misfire and overlap policy."""

from __future__ import annotations

import datetime
from typing import Any

from celery.utils.time import maybe_make_aware
from django.db.models import Q
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from tasks.models import SchedulePolicy
from tasks.scheduling.next_run import schedule_due_at


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
        # update(), not save(): no date_changed bump, no signals, no history, no reload. Never
        # backwards: a leader that resumes after losing its lease must not undo a newer leader's
        # last run (the next due time, and so the run's key, is computed from it).
        last_run_at = self.model.last_run_at
        PeriodicTask.objects.filter(pk=self.model.pk).filter(
            Q(last_run_at__isnull=True) | Q(last_run_at__lte=last_run_at)
        ).update(last_run_at=last_run_at, total_run_count=self.model.total_run_count)

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
