"""Schedule history: every create, change and delete, by whom, from where, and what changed."""

from __future__ import annotations

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tasks.models import ScheduleChange, SchedulePolicy
from tasks.scheduling.history import schedule_change_context

pytestmark = pytest.mark.django_db


@pytest.fixture
def every_minute():
    return IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)


def test_create_change_and_delete_are_recorded_with_what_changed(every_minute):
    task = PeriodicTask.objects.create(name="job", task="tasks.ping", interval=every_minute)
    every_hour = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS)
    task.interval = every_hour
    task.kwargs = '{"x": 1}'
    task.save()
    pk = task.pk
    task.delete()

    created, changed, deleted = ScheduleChange.objects.order_by("at", "pk")
    assert (created.action, created.periodic_task_id, created.periodic_task_name) == ("created", pk, "job")
    assert created.changes["task"] == [None, "tasks.ping"]
    assert created.changes["interval"] == [None, "every minute"]
    assert changed.action == "changed"
    assert changed.changes == {"interval": ["every minute", "every hour"], "kwargs": ["{}", '{"x": 1}']}
    assert (deleted.action, deleted.periodic_task_id) == ("deleted", pk)
    assert {change.source for change in (created, changed, deleted)} == {"code"}


def test_beat_bookkeeping_and_saves_without_changes_are_not_recorded(every_minute):
    task = PeriodicTask.objects.create(name="job", task="tasks.ping", interval=every_minute)
    task.last_run_at = timezone.now()
    task.total_run_count = 3
    task.save()
    task.save()

    assert list(ScheduleChange.objects.values_list("action", flat=True)) == ["created"]


def test_changes_inside_a_context_name_the_user_and_source(every_minute, django_user_model):
    operator = django_user_model.objects.create_user("operator")
    with schedule_change_context(user=operator, source="admin"):
        PeriodicTask.objects.create(name="job", task="tasks.ping", interval=every_minute)

    change = ScheduleChange.objects.get()
    assert (change.user, change.source) == (operator, "admin")


def test_a_policy_change_is_recorded_and_marks_the_task_changed_for_beat(every_minute):
    task = PeriodicTask.objects.create(name="job", task="tasks.ping", interval=every_minute)
    policy = SchedulePolicy.objects.create(periodic_task=task, misfire="skip", overlap="allow")
    PeriodicTask.objects.filter(pk=task.pk).update(date_changed=timezone.now() - timezone.timedelta(hours=1))
    policy.overlap = "skip"
    policy.save()

    first, second = ScheduleChange.objects.filter(changes__has_key="policy.overlap").order_by("at", "pk")
    assert first.changes == {"policy.misfire": [None, "skip"], "policy.overlap": [None, "allow"]}
    assert second.changes == {"policy.overlap": ["allow", "skip"]}
    assert second.periodic_task_name == "job"
    task.refresh_from_db()
    assert timezone.now() - task.date_changed < timezone.timedelta(minutes=1)
