"""History of schedules: every create, change and delete of a PeriodicTask, by whom and what changed.

Signals record changes from every path that saves model instances (admin, shell,
``sync_schedules``, Beat disabling an expired one-off), so nothing that goes through
``save()`` or ``delete()`` is missed. ``QuerySet.update()`` sends no signals: code that
bulk-edits schedules calls :func:`schedule_change_record` itself, as the admin actions do.

Who made a change comes from :func:`schedule_change_context`, which the admin enters for
each request and ``sync_schedules`` for its run; anything else is recorded as ``code``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models.signals import post_delete, post_save, pre_save
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from tasks.models import ScheduleChange, SchedulePolicy

# Written by Beat on every run, or bookkeeping: not an operator's change.
UNTRACKED_FIELDS = frozenset({"id", "last_run_at", "total_run_count", "date_changed"})
POLICY_FIELDS = ("misfire", "overlap")


@dataclass(frozen=True)
class ChangeContext:
    """Who is changing schedules right now, and through what."""

    user: Any = None
    source: str = "code"


_DEFAULT_CONTEXT = ChangeContext()
_context: ContextVar[ChangeContext | None] = ContextVar("schedule_change_context", default=None)


@contextmanager
def schedule_change_context(*, user: Any = None, source: str) -> Iterator[None]:
    """Attribute every schedule change made inside the block to ``user`` and ``source``."""
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    token = _context.set(ChangeContext(user=user, source=source))
    try:
        yield
    finally:
        _context.reset(token)


def _json_value(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder, default=str))


def periodic_task_snapshot(task: PeriodicTask) -> dict[str, Any]:
    """The operator-visible fields of ``task`` as JSON values; schedules as their text."""
    snapshot: dict[str, Any] = {}
    for field in task._meta.concrete_fields:
        if field.name in UNTRACKED_FIELDS:
            continue
        if field.is_relation:
            related = getattr(task, field.name) if getattr(task, field.attname) is not None else None
            snapshot[field.name] = str(related) if related is not None else None
        else:
            snapshot[field.name] = _json_value(getattr(task, field.attname))
    return snapshot


def snapshot_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``field -> [old, new]`` for every field whose value differs."""
    return {
        name: [old.get(name), new.get(name)] for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)
    }


def schedule_change_record(
    *, periodic_task_id: int, periodic_task_name: str, action: str, changes: Mapping[str, list[Any]]
) -> ScheduleChange:
    """Write one history row, attributed to the current :func:`schedule_change_context`."""
    context = _context.get() or _DEFAULT_CONTEXT
    return ScheduleChange.objects.create(
        periodic_task_id=periodic_task_id,
        periodic_task_name=periodic_task_name,
        action=action,
        changes=_json_value(dict(changes)),
        user=context.user,
        source=context.source,
    )


def periodic_tasks_touch(ids: list[int]) -> None:
    """Mark rows changed so Beat's incremental reload reads them again (``update()`` skips auto_now)."""
    PeriodicTask.objects.filter(pk__in=ids).update(date_changed=timezone.now())
    PeriodicTasks.update_changed()


def _remember_old_values(sender: type, instance: PeriodicTask, **kwargs: Any) -> None:
    old = PeriodicTask.objects.filter(pk=instance.pk).first() if instance.pk else None
    instance._history_old_snapshot = periodic_task_snapshot(old) if old else None


def _record_save(sender: type, instance: PeriodicTask, created: bool, **kwargs: Any) -> None:
    old = getattr(instance, "_history_old_snapshot", None)
    new = periodic_task_snapshot(instance)
    if created or old is None:
        changes = {name: [None, value] for name, value in new.items() if value not in (None, "", "[]", "{}")}
        action = ScheduleChange.Action.CREATED
    else:
        changes = snapshot_diff(old, new)
        action = ScheduleChange.Action.CHANGED
        if not changes:
            return
    schedule_change_record(
        periodic_task_id=instance.pk, periodic_task_name=instance.name, action=action, changes=changes
    )


def _record_delete(sender: type, instance: PeriodicTask, **kwargs: Any) -> None:
    schedule_change_record(
        periodic_task_id=instance.pk,
        periodic_task_name=instance.name,
        action=ScheduleChange.Action.DELETED,
        changes={"task": [instance.task, None]},
    )


def _remember_old_policy(sender: type, instance: SchedulePolicy, **kwargs: Any) -> None:
    old = SchedulePolicy.objects.filter(pk=instance.pk).values(*POLICY_FIELDS).first() if instance.pk else None
    instance._history_old_policy = old


def _record_policy(sender: type, instance: SchedulePolicy, created: bool, **kwargs: Any) -> None:
    old = getattr(instance, "_history_old_policy", None) or {}
    changes = {
        f"policy.{name}": [old.get(name), getattr(instance, name)]
        for name in POLICY_FIELDS
        if old.get(name) != getattr(instance, name)
    }
    if not changes:
        return
    task = PeriodicTask.objects.filter(pk=instance.periodic_task_id).only("name").first()
    schedule_change_record(
        periodic_task_id=instance.periodic_task_id,
        periodic_task_name=task.name if task else "",
        action=ScheduleChange.Action.CHANGED,
        changes=changes,
    )
    # The policy lives beside the PeriodicTask: Beat only sees it when the task row changes.
    periodic_tasks_touch([instance.periodic_task_id])


def connect() -> None:
    """Record schedule changes from model signals; called from ``TasksConfig.ready()``."""
    pre_save.connect(_remember_old_values, sender=PeriodicTask, dispatch_uid="schedule_history_pre_save")
    post_save.connect(_record_save, sender=PeriodicTask, dispatch_uid="schedule_history_post_save")
    post_delete.connect(_record_delete, sender=PeriodicTask, dispatch_uid="schedule_history_post_delete")
    pre_save.connect(_remember_old_policy, sender=SchedulePolicy, dispatch_uid="schedule_history_policy_pre_save")
    post_save.connect(_record_policy, sender=SchedulePolicy, dispatch_uid="schedule_history_policy_post_save")
