"""Code-declared default schedules, upserted by name into django-celery-beat's tables.

Jobs declare their default schedule with :func:`declare_schedule` (marketplace from
``MarketplaceConfig.ready()``, the platform's own housekeeping from ``TasksConfig.ready()``).
``manage.py sync_schedules`` (the Procfile's release step) calls :func:`schedules_sync`:

- a declared schedule with no row of its name is created, with its policy;
- an existing row is left as it is, so an operator's edit in the admin survives every
  deploy (the report names the fields that differ from the declared default);
- a schedule an operator deleted stays deleted (its history says so);
- ``reset=[name]`` puts the declared default back.

A second run therefore changes nothing. The admin stays the place to edit schedules.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import current_app
from celery import schedules as celery_schedules
from celery.result import AsyncResult
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django_celery_beat.models import (
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
)

from tasks.models import ScheduleChange, SchedulePolicy
from tasks.queues import validate_queue
from tasks.scheduling.history import schedule_change_context
from tasks.scheduling.runs import job_send


@dataclass(frozen=True)
class DeclaredSchedule:
    """The default of one periodic job: what runs, when, where, and under which policies."""

    name: str
    task: str
    schedule: celery_schedules.crontab | celery_schedules.schedule
    description: str = ""
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    misfire: str = SchedulePolicy.Misfire.RUN_ONCE
    overlap: str = SchedulePolicy.Overlap.SKIP
    expire_seconds: int | None = None

    def model_fields(self) -> dict[str, Any]:
        """The PeriodicTask field values of this default (schedule rows created if missing)."""
        fields: dict[str, Any] = {"interval": None, "crontab": None, "solar": None, "clocked": None}
        if isinstance(self.schedule, celery_schedules.crontab):
            fields["crontab"] = _crontab_row(self.schedule)
        else:
            fields["interval"] = _interval_row(self.schedule.run_every)
        fields.update(
            task=self.task,
            args=json.dumps(list(self.args)),
            kwargs=json.dumps(dict(self.kwargs)),
            queue=self.queue,
            exchange=None,
            routing_key=None,
            priority=None,
            headers="{}",
            expires=None,
            expire_seconds=self.expire_seconds,
            one_off=False,
            start_time=None,
            enabled=True,
            description=self.description,
        )
        return fields


_registry: dict[str, DeclaredSchedule] = {}


def declare_schedule(
    *,
    name: str,
    task: str,
    schedule: celery_schedules.crontab | celery_schedules.schedule | timedelta,
    description: str = "",
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    queue: str | None = None,
    misfire: str = SchedulePolicy.Misfire.RUN_ONCE,
    overlap: str = SchedulePolicy.Overlap.SKIP,
    expire_seconds: int | None = None,
) -> DeclaredSchedule:
    """Register the default schedule ``name``; declaring the same one again is harmless.

    ``schedule`` is a Celery ``crontab``, a ``timedelta`` or a ``schedule(run_every=...)``.
    Declaring a name twice with different settings is a programming error.
    """
    if isinstance(schedule, timedelta):
        schedule = celery_schedules.schedule(run_every=schedule)
    if not isinstance(schedule, celery_schedules.crontab | celery_schedules.schedule):
        raise ImproperlyConfigured(f"Schedule {name!r}: use a crontab or a timedelta, not {schedule!r}.")
    if queue is not None:
        validate_queue(queue)
    if misfire not in SchedulePolicy.Misfire.values or overlap not in SchedulePolicy.Overlap.values:
        raise ImproperlyConfigured(f"Schedule {name!r}: unknown misfire {misfire!r} or overlap {overlap!r} policy.")
    declared = DeclaredSchedule(
        name=name,
        task=task,
        schedule=schedule,
        description=description,
        args=tuple(args),
        kwargs=dict(kwargs or {}),
        queue=queue,
        misfire=misfire,
        overlap=overlap,
        expire_seconds=expire_seconds,
    )
    existing = _registry.get(name)
    if existing is not None and existing != declared:
        raise ImproperlyConfigured(f"Schedule {name!r} is declared twice with different settings.")
    _registry[name] = declared
    return declared


def declared_schedules() -> dict[str, DeclaredSchedule]:
    """Every declared default schedule by name (a copy: the registry is read-only)."""
    return dict(sorted(_registry.items()))


def _interval_row(run_every: timedelta) -> IntervalSchedule:
    seconds = int(run_every.total_seconds())
    if seconds < 1 or seconds != run_every.total_seconds():
        raise ImproperlyConfigured(f"Interval schedules need whole seconds, not {run_every}.")
    units = ((IntervalSchedule.DAYS, 86400), (IntervalSchedule.HOURS, 3600), (IntervalSchedule.MINUTES, 60))
    period, every = next(
        ((name, seconds // unit) for name, unit in units if seconds % unit == 0), (IntervalSchedule.SECONDS, seconds)
    )
    row = IntervalSchedule.objects.filter(every=every, period=period).order_by("pk").first()
    return row or IntervalSchedule.objects.create(every=every, period=period)


def _crontab_row(cron: celery_schedules.crontab) -> CrontabSchedule:
    spec = {
        "minute": str(cron._orig_minute),
        "hour": str(cron._orig_hour),
        "day_of_week": str(cron._orig_day_of_week),
        "day_of_month": str(cron._orig_day_of_month),
        "month_of_year": str(cron._orig_month_of_year),
        "timezone": str(cron.tz or "UTC"),
    }
    row = CrontabSchedule.objects.filter(**spec).order_by("pk").first()
    return row or CrontabSchedule.objects.create(**spec)


def _differences(task: PeriodicTask, fields: Mapping[str, Any]) -> list[str]:
    differing = []
    for name, declared in fields.items():
        current, wanted = getattr(task, name), declared
        if name in ("args", "kwargs", "headers"):
            current, wanted = json.loads(current or "null"), json.loads(declared)
        elif name in ("interval", "crontab", "solar", "clocked"):
            current, wanted = getattr(task, f"{name}_id"), declared.pk if declared is not None else None
        if current != wanted:
            differing.append(name)
    return differing


def _deleted_by_operator(name: str) -> bool:
    """True when the last thing that happened to schedule ``name`` was its deletion."""
    last = ScheduleChange.objects.filter(periodic_task_name=name).order_by("-at", "-pk").first()
    return last is not None and last.action == ScheduleChange.Action.DELETED


@dataclass
class SyncReport:
    """What one :func:`schedules_sync` run did, by schedule name."""

    created: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept_edits: dict[str, list[str]] = field(default_factory=dict)
    kept_deleted: list[str] = field(default_factory=list)

    @property
    def changed_anything(self) -> bool:
        return bool(self.created or self.reset)


def schedules_sync(*, reset: Iterable[str] = (), source: str = "sync_schedules") -> SyncReport:
    """Create missing declared schedules; restore the declared default of those in ``reset``.

    Rows that exist are never touched unless reset, and a deleted one is not created again
    unless reset: the admin owns them after the first sync. Raises ``ValueError`` for a reset
    name that is not declared.
    """
    declared = declared_schedules()
    reset = set(reset)
    unknown = reset - set(declared)
    if unknown:
        raise ValueError(f"Not a declared schedule: {', '.join(sorted(unknown))}.")
    report = SyncReport()
    with schedule_change_context(source=source), transaction.atomic():
        for name, spec in declared.items():
            fields = spec.model_fields()
            task = PeriodicTask.objects.filter(name=name).first()
            if task is None and name not in reset and _deleted_by_operator(name):
                report.kept_deleted.append(name)
                continue
            if task is None:
                task = PeriodicTask(name=name, **fields)
                task.save()
                SchedulePolicy.objects.create(periodic_task=task, misfire=spec.misfire, overlap=spec.overlap)
                report.created.append(name)
                continue
            policy = SchedulePolicy.objects.filter(periodic_task=task).first()
            if name in reset:
                for attr, value in fields.items():
                    setattr(task, attr, value)
                task.save()
                policy = policy or SchedulePolicy(periodic_task=task)
                policy.misfire, policy.overlap = spec.misfire, spec.overlap
                policy.save()
                report.reset.append(name)
                continue
            if policy is None:
                # Adopt a row made before policies existed (or by hand) with the declared policy.
                SchedulePolicy.objects.create(periodic_task=task, misfire=spec.misfire, overlap=spec.overlap)
            differing = _differences(task, fields)
            if policy is not None and (policy.misfire, policy.overlap) != (spec.misfire, spec.overlap):
                differing.append("policy")
            if differing:
                report.kept_edits[name] = differing
            report.unchanged.append(name)
        if report.changed_anything:
            PeriodicTasks.update_changed()
    return report


def periodic_task_run_now(*, periodic_task: PeriodicTask) -> AsyncResult:
    """Send ``periodic_task``'s job at once, as Beat would (same options, named in its result)."""
    app = current_app._get_current_object()
    app.loader.import_default_modules()
    options: dict[str, Any] = {}
    for option in ("queue", "exchange", "routing_key", "priority"):
        value = getattr(periodic_task, option)
        if value is not None:
            options[option] = value
    headers = json.loads(periodic_task.headers or "{}")
    headers["periodic_task_name"] = periodic_task.name
    args = json.loads(periodic_task.args or "[]")
    kwargs = json.loads(periodic_task.kwargs or "{}")
    return job_send(task=periodic_task.task, args=args, kwargs=kwargs, options={**options, "headers": headers})
