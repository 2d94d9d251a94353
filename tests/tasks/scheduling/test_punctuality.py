"""Schedule punctuality: recorded runs against the runs a schedule implies, and the implied runs
of crontabs in America/New_York and Europe/Paris across both daylight-saving changes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from tasks.models import ScheduledRun
from tasks.scheduling.punctuality import (
    LATE,
    MISSED,
    NO_RUNS_DUE,
    ON_TIME,
    implied_due_times,
    schedule_punctuality,
    schedules_punctuality,
)

pytestmark = pytest.mark.django_db

# (zone, the local day of the spring-forward change, the local day of the fall-back change) in 2026
ZONES = [("America/New_York", (2026, 3, 8), (2026, 11, 1)), ("Europe/Paris", (2026, 3, 29), (2026, 10, 25))]


def crontab(zone: str, *, hour: str, minute: str = "30") -> object:
    return CrontabSchedule(minute=minute, hour=hour, timezone=zone).schedule


def local(times: list[datetime], zone: str) -> list[str]:
    return [t.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M%z") for t in times]


@pytest.mark.parametrize(("zone", "spring", "fall"), ZONES)
def test_an_hourly_crontab_runs_each_instant_once_across_the_spring_forward_change(zone, spring, fall):
    start = datetime(*spring, 0, 0, tzinfo=ZoneInfo(zone))
    due = list(implied_due_times(crontab(zone, hour="*"), start=start, end=start + timedelta(hours=5)))
    # 02:30 does not exist that night: Celery maps it onto 03:30's instant, which runs once.
    offsets = ("-0500", "-0400") if zone == "America/New_York" else ("+0100", "+0200")
    day = f"{spring[1]:02d}-{spring[2]:02d}"
    assert local(due, zone) == [
        f"{day} 00:30{offsets[0]}",
        f"{day} 01:30{offsets[0]}",
        f"{day} 03:30{offsets[1]}",
        f"{day} 04:30{offsets[1]}",
    ]
    assert due == sorted(set(due)), "strictly increasing instants"


@pytest.mark.parametrize(("zone", "spring", "fall"), ZONES)
def test_an_hourly_crontab_runs_each_wall_clock_time_once_across_the_fall_back_change(zone, spring, fall):
    start = datetime(*fall, 0, 0, tzinfo=ZoneInfo(zone))
    due = list(implied_due_times(crontab(zone, hour="*"), start=start, end=start + timedelta(hours=6)))
    wall_clock = [t.astimezone(ZoneInfo(zone)).strftime("%H:%M") for t in due]
    assert wall_clock == ["00:30", "01:30", "02:30", "03:30", "04:30", "05:30"][: len(due)]
    assert len(wall_clock) == len(set(wall_clock)), "the repeated hour is not run twice"
    assert due == sorted(set(due))


@pytest.mark.parametrize(("zone", "spring", "fall"), ZONES)
@pytest.mark.parametrize("hour", ["1", "2"])
def test_a_daily_crontab_runs_once_on_each_day_of_both_changes(zone, spring, fall, hour):
    for day in (spring, fall):
        start = datetime(*day, 12, 0, tzinfo=ZoneInfo(zone)) - timedelta(days=2)
        due = list(implied_due_times(crontab(zone, hour=hour), start=start, end=start + timedelta(days=4)))
        days = [t.astimezone(ZoneInfo(zone)).date() for t in due]
        assert len(due) == 4 and len(set(days)) == 4, local(due, zone)
        gaps = {round((b - a).total_seconds() / 3600) for a, b in itertools.pairwise(due)}
        assert gaps <= {23, 24, 25}, "a day apart, give or take the hour the clocks moved"


def periodic(name: str, *, changed_at: datetime, **schedule: object) -> PeriodicTask:
    task = PeriodicTask.objects.create(name=name, task="tasks.ping", **schedule)
    PeriodicTask.objects.filter(pk=task.pk).update(date_changed=changed_at)
    task.refresh_from_db()
    return task


def record(task: PeriodicTask, due: datetime, *, sent_after: timedelta | None = timedelta(seconds=1)) -> None:
    ScheduledRun.objects.create(
        periodic_task_name=task.name, due_at=due, task=task.task, task_id=str(due.timestamp()),
        leader="beat", leader_generation=1, sent_at=None if sent_after is None else due + sent_after,
    )  # fmt: skip


def test_a_crontab_schedule_is_on_time_late_or_missed_by_its_runs(settings):
    settings.SCHEDULE_PUNCTUALITY_WINDOW = 6 * 3600
    now = datetime(2026, 12, 1, 12, 10, tzinfo=UTC)
    every_hour = CrontabSchedule.objects.create(minute="0", hour="*", timezone="UTC")
    hourly = periodic("hourly", changed_at=now - timedelta(days=2), crontab=every_hour)
    due_times = [now.replace(minute=0) - timedelta(hours=n) for n in range(5, -1, -1)]
    for due in due_times:
        record(hourly, due)
    assert (schedule_punctuality(hourly, now=now).state, schedule_punctuality(hourly, now=now).on_time) == (ON_TIME, 6)
    ScheduledRun.objects.filter(due_at=due_times[2]).update(sent_at=due_times[2] + timedelta(minutes=5))
    assert schedule_punctuality(hourly, now=now).state == LATE
    ScheduledRun.objects.filter(due_at=due_times[3]).delete()
    result = schedule_punctuality(hourly, now=now)
    assert (result.state, result.on_time, result.late, result.missed) == (MISSED, 4, 1, 1)
    assert result.missed_due_at == [due_times[3]]
    assert result.summary == "missed: 4 on time, 1 late, 1 missed"


def test_an_interval_schedule_counts_the_periods_its_runs_left_out(settings):
    settings.SCHEDULE_PUNCTUALITY_WINDOW = 3600
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.MINUTES)
    task = periodic("every ten minutes", changed_at=now - timedelta(days=2), interval=every)
    runs = [now - timedelta(minutes=m) for m in (55, 45, 35, 5)]  # nothing at 25 and 15
    for due in runs:
        record(task, due)
    result = schedule_punctuality(task, now=now)
    assert (result.state, result.on_time, result.missed) == (MISSED, 4, 2)
    assert result.missed_due_at == [now - timedelta(minutes=25), now - timedelta(minutes=15)]


def test_a_schedule_changed_recently_is_judged_from_the_change_and_a_disabled_one_not_at_all(settings):
    now = timezone.now()
    every_minute = CrontabSchedule.objects.create(minute="*", hour="*", timezone="UTC")
    task = periodic("fresh", changed_at=now - timedelta(seconds=5), crontab=every_minute)
    assert schedule_punctuality(task, now=now).state == NO_RUNS_DUE
    task.enabled = False
    assert schedule_punctuality(task, now=now).state == NO_RUNS_DUE


def test_many_schedules_are_judged_with_one_query_of_their_runs(django_assert_num_queries):
    now = datetime(2026, 12, 1, 12, 10, tzinfo=UTC)
    tasks = []
    for n in range(3):
        schedule = CrontabSchedule.objects.create(minute="0", hour="*", timezone="UTC")
        tasks.append(periodic(f"hourly {n}", changed_at=now - timedelta(days=2), crontab=schedule))
        record(tasks[-1], now.replace(minute=0))
    tasks = list(PeriodicTask.objects.select_related("crontab").filter(pk__in=[t.pk for t in tasks]).order_by("name"))
    with django_assert_num_queries(1):
        judged = schedules_punctuality(tasks, now=now)
    assert [(p.name, p.on_time) for p in judged] == [("hourly 0", 1), ("hourly 1", 1), ("hourly 2", 1)]
