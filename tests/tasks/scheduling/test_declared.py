"""Declared schedules and ``sync_schedules``: created once, operator edits kept, reset on request."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks

from tasks.models import ScheduleChange, SchedulePolicy
from tasks.scheduling import declared as schedules
from tasks.scheduling.declared import declare_schedule, declared_schedules, periodic_task_run_now, schedules_sync

DEFAULTS = {
    "calculate_daily_stats": ("marketplace.calculate_daily_stats", "0", "2"),
    "cleanup_expired_tokens": ("marketplace.cleanup_expired_tokens", "0", "0,12"),
    "refresh_search_index": ("marketplace.refresh_search_index", "*/30", "*"),
    "prune_sent_outbox": ("tasks.prune_sent_outbox", "30", "3"),
    "celery.backend_cleanup": ("celery.backend_cleanup", "0", "4"),
}


@pytest.fixture
def own_registry(monkeypatch):
    """A copy of the registry, so a test may declare schedules without leaking them."""
    monkeypatch.setattr(schedules, "_registry", dict(schedules._registry))


def test_declared_defaults_are_the_platform_and_marketplace_jobs():
    declared = declared_schedules()
    assert set(DEFAULTS) <= set(declared)
    for name, (task, minute, hour) in DEFAULTS.items():
        spec = declared[name]
        assert spec.task == task
        assert spec.schedule == crontab(minute=minute, hour=hour)
        assert spec.queue == "low"
        assert spec.args == () and spec.kwargs == {}


@pytest.mark.django_db
def test_sync_creates_every_declared_schedule_with_its_policy_when_the_database_is_empty():
    report = schedules_sync()

    assert sorted(report.created) == sorted(declared_schedules())
    daily = PeriodicTask.objects.get(name="calculate_daily_stats")
    assert daily.task == "marketplace.calculate_daily_stats"
    assert (daily.crontab.minute, daily.crontab.hour, str(daily.crontab.timezone)) == ("0", "2", "UTC")
    assert daily.queue == "low" and daily.enabled
    assert json.loads(daily.args) == [] and json.loads(daily.kwargs) == {}
    refresh = PeriodicTask.objects.get(name="refresh_search_index")
    assert refresh.policy.misfire == SchedulePolicy.Misfire.SKIP
    assert daily.policy.misfire == SchedulePolicy.Misfire.RUN_ONCE
    assert daily.policy.overlap == SchedulePolicy.Overlap.SKIP
    created = ScheduleChange.objects.filter(action="created", source="sync_schedules")
    assert created.count() == len(declared_schedules())


@pytest.mark.django_db
def test_sync_changes_nothing_when_run_a_second_time():
    schedules_sync()
    rows = {task.pk: (task.date_changed, task.crontab_id) for task in PeriodicTask.objects.all()}
    last_change = PeriodicTasks.last_change()
    history = ScheduleChange.objects.count()
    crontabs = CrontabSchedule.objects.count()

    report = schedules_sync()

    assert report.created == [] and report.reset == [] and report.kept_edits == {}
    assert sorted(report.unchanged) == sorted(declared_schedules())
    assert {task.pk: (task.date_changed, task.crontab_id) for task in PeriodicTask.objects.all()} == rows
    assert PeriodicTasks.last_change() == last_change
    assert ScheduleChange.objects.count() == history
    assert CrontabSchedule.objects.count() == crontabs


@pytest.mark.django_db
def test_sync_keeps_an_operator_edit_and_reset_restores_the_default():
    schedules_sync()
    daily = PeriodicTask.objects.get(name="calculate_daily_stats")
    daily.crontab = CrontabSchedule.objects.create(minute="15", hour="5", timezone="UTC")
    daily.enabled = False
    daily.save()
    SchedulePolicy.objects.filter(periodic_task=daily).update(misfire=SchedulePolicy.Misfire.SKIP)

    report = schedules_sync()

    assert report.kept_edits == {"calculate_daily_stats": ["crontab", "enabled", "policy"]}
    daily.refresh_from_db()
    assert (daily.crontab.minute, daily.crontab.hour, daily.enabled) == ("15", "5", False)

    report = schedules_sync(reset=["calculate_daily_stats"])

    assert report.reset == ["calculate_daily_stats"]
    daily.refresh_from_db()
    assert (daily.crontab.minute, daily.crontab.hour, daily.enabled) == ("0", "2", True)
    assert daily.policy.misfire == SchedulePolicy.Misfire.RUN_ONCE
    assert schedules_sync().kept_edits == {}


@pytest.mark.django_db
def test_sync_does_not_bring_back_a_schedule_an_operator_deleted_unless_reset():
    schedules_sync()
    PeriodicTask.objects.get(name="cleanup_expired_tokens").delete()

    report = schedules_sync()

    assert report.kept_deleted == ["cleanup_expired_tokens"] and report.created == []
    assert not PeriodicTask.objects.filter(name="cleanup_expired_tokens").exists()
    out = StringIO()
    call_command("sync_schedules", "--reset", "cleanup_expired_tokens", stdout=out)
    assert "created  cleanup_expired_tokens" in out.getvalue()
    assert PeriodicTask.objects.get(name="cleanup_expired_tokens").policy.misfire == "run_once"
    assert schedules_sync().kept_deleted == []


@pytest.mark.django_db
def test_sync_refuses_to_reset_a_name_that_is_not_declared():
    with pytest.raises(ValueError, match="no-such-job"):
        schedules_sync(reset=["no-such-job"])
    with pytest.raises(CommandError, match="no-such-job"):
        call_command("sync_schedules", "--reset", "no-such-job", stdout=StringIO())
    assert not PeriodicTask.objects.exists()


@pytest.mark.django_db
def test_sync_adopts_a_row_of_the_same_name_made_before_and_gives_it_the_declared_policy():
    hourly = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS)
    PeriodicTask.objects.create(name="celery.backend_cleanup", task="celery.backend_cleanup", interval=hourly)

    report = schedules_sync()

    assert "celery.backend_cleanup" not in report.created
    assert report.kept_edits["celery.backend_cleanup"][:2] == ["interval", "crontab"]
    assert PeriodicTask.objects.filter(name="celery.backend_cleanup").count() == 1
    assert PeriodicTask.objects.get(name="celery.backend_cleanup").policy.overlap == SchedulePolicy.Overlap.SKIP


@pytest.mark.django_db
def test_command_reports_created_kept_and_lists_declared_schedules():
    out = StringIO()
    call_command("sync_schedules", stdout=out)
    assert "created  calculate_daily_stats" in out.getvalue()

    PeriodicTask.objects.filter(name="refresh_search_index").update(enabled=False)
    out = StringIO()
    call_command("sync_schedules", stdout=out)
    assert "kept     refresh_search_index (edited in the admin: enabled;" in out.getvalue()
    assert "0 created, 0 reset, 1 kept with edits, 0 kept deleted" in out.getvalue()

    out = StringIO()
    call_command("sync_schedules", "--list", stdout=out)
    lines = {line.split("\t")[0]: line for line in out.getvalue().splitlines()}
    assert set(lines) == set(declared_schedules())
    assert lines["refresh_search_index"].endswith("disabled")
    assert "misfire=skip" in lines["refresh_search_index"]


def test_declaring_a_name_twice_differently_is_an_error(own_registry):
    declare_schedule(name="twice", task="tasks.ping", schedule=timedelta(minutes=5))
    declare_schedule(name="twice", task="tasks.ping", schedule=timedelta(minutes=5))
    with pytest.raises(ImproperlyConfigured, match="twice"):
        declare_schedule(name="twice", task="tasks.ping", schedule=timedelta(minutes=6))


def test_declaring_an_unknown_queue_or_policy_is_an_error(own_registry):
    with pytest.raises(ValueError, match="Unknown queue"):
        declare_schedule(name="bad-queue", task="tasks.ping", schedule=timedelta(minutes=5), queue="nope")
    with pytest.raises(ImproperlyConfigured, match="policy"):
        declare_schedule(name="bad-policy", task="tasks.ping", schedule=timedelta(minutes=5), misfire="later")


@pytest.mark.django_db
def test_interval_declarations_are_stored_in_their_largest_whole_unit(own_registry):
    declare_schedule(name="every-90-minutes", task="tasks.ping", schedule=timedelta(minutes=90))
    declare_schedule(name="every-45-seconds", task="tasks.ping", schedule=timedelta(seconds=45))

    schedules_sync()

    ninety = PeriodicTask.objects.get(name="every-90-minutes").interval
    assert (ninety.every, ninety.period) == (90, IntervalSchedule.MINUTES)
    seconds = PeriodicTask.objects.get(name="every-45-seconds").interval
    assert (seconds.every, seconds.period) == (45, IntervalSchedule.SECONDS)


@pytest.mark.django_db
def test_run_now_sends_the_job_to_its_queue_named_after_its_schedule(redis_client):
    schedules_sync()
    daily = PeriodicTask.objects.get(name="calculate_daily_stats")

    result = periodic_task_run_now(periodic_task=daily)

    messages = [json.loads(raw) for raw in redis_client.lrange("low", 0, -1)]
    sent = [message for message in messages if message["headers"]["id"] == result.id]
    assert len(sent) == 1
    assert sent[0]["headers"]["task"] == "marketplace.calculate_daily_stats"
    assert sent[0]["headers"]["periodic_task_name"] == "calculate_daily_stats"
