"""When a schedule runs next (``tasks.scheduling.next_run``): one answer for Beat, the schedule
admin and the status page (DESIGN.md section 3: two screens that show the same thing call the
same function)."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from celery import schedules as celery_schedules
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from config.celery_app import app as celery_app
from tasks.monitoring.selectors import schedules_overview
from tasks.scheduling.entry import PlatformEntry
from tasks.scheduling.next_run import NextRunUnknown, periodic_task_next_run, schedule_due_at

LIST_URL = reverse("admin:django_celery_beat_periodictask_changelist")

pytestmark = pytest.mark.django_db


def every(seconds: int) -> IntervalSchedule:
    return IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)[0]


def daily_at_two(tz=UTC) -> CrontabSchedule:
    return CrontabSchedule.objects.create(minute="0", hour="2", timezone=tz)


def periodic_task(name: str, **fields) -> PeriodicTask:
    if "crontab" not in fields:
        fields.setdefault("interval", every(60))
    return PeriodicTask.objects.create(name=name, task="tasks.ping", **fields)


def last_two_oclock(now: datetime, tz=UTC) -> datetime:
    """The latest 02:00 (in ``tz``) at or before ``now``."""
    local = now.astimezone(tz)
    two = local.replace(hour=2, minute=0, second=0, microsecond=0)
    return two if two <= local else two - timedelta(days=1)


# --- periodic_task_next_run -----------------------------------------------------------------------


def test_an_interval_runs_next_one_interval_after_its_last_run_when_that_is_ahead():
    now = timezone.now()
    task = periodic_task("every-minute", interval=every(60), last_run_at=now - timedelta(seconds=20))
    assert periodic_task_next_run(task, now=now) == task.last_run_at + timedelta(seconds=60)


def test_an_interval_counts_from_its_last_change_when_it_never_ran():
    task = periodic_task("fresh", interval=every(3600))
    assert task.last_run_at is None
    assert periodic_task_next_run(task, now=task.date_changed) == task.date_changed + timedelta(hours=1)


def test_a_crontab_runs_next_at_its_next_time_when_it_ran_at_the_last_one():
    now = timezone.now()
    last = last_two_oclock(now)
    task = periodic_task("nightly", crontab=daily_at_two(), last_run_at=last)
    assert periodic_task_next_run(task, now=now) == last + timedelta(days=1)


def test_a_crontab_runs_next_at_its_time_in_its_own_time_zone_when_that_is_not_utc():
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    now = timezone.now()
    last = last_two_oclock(now, paris)
    task = periodic_task("nightly-in-paris", crontab=daily_at_two(paris), last_run_at=last)

    next_run = periodic_task_next_run(task, now=now)

    assert next_run > now
    assert (next_run.astimezone(paris).hour, next_run.astimezone(paris).minute) == (2, 0)
    assert next_run - last <= timedelta(days=1, hours=1)  # the very next one (a DST change moves it by 1 h)


def test_a_task_has_no_next_run_when_it_is_disabled():
    task = periodic_task("off", enabled=False)
    assert periodic_task_next_run(task) is None


@pytest.mark.parametrize(
    "ran",
    [{"total_run_count": 1}, {"last_run_at": datetime(2026, 1, 1, tzinfo=UTC)}],
    ids=["counted", "last run recorded"],
)
def test_a_one_off_task_never_runs_again_when_it_ran(ran):
    task = periodic_task("once", one_off=True, **ran)
    assert periodic_task_next_run(task) is None


def test_a_one_off_task_has_a_next_run_when_it_has_not_run_yet():
    now = timezone.now()
    task = periodic_task("once", one_off=True, interval=every(300))
    assert periodic_task_next_run(task, now=now) == max(task.date_changed + timedelta(seconds=300), now)


def test_a_task_runs_first_at_its_start_time_when_that_is_in_the_future():
    now = timezone.now()
    start = now + timedelta(days=2)
    task = periodic_task("later", interval=every(60), start_time=start, last_run_at=now - timedelta(seconds=10))
    assert periodic_task_next_run(task, now=now) == start


def test_an_overdue_task_runs_next_now_not_in_the_past_when_its_due_time_has_passed():
    now = timezone.now()
    task = periodic_task("overdue", interval=every(60), last_run_at=now - timedelta(hours=1))
    assert periodic_task_next_run(task, now=now) == now


def break_interval(task: PeriodicTask) -> None:
    IntervalSchedule.objects.filter(pk=task.interval_id).update(period="fortnights")


def break_crontab(task: PeriodicTask) -> None:
    CrontabSchedule.objects.filter(pk=task.crontab_id).update(hour="99")


def drop_schedule(task: PeriodicTask) -> None:
    PeriodicTask.objects.filter(pk=task.pk).update(interval=None)


@pytest.mark.parametrize(
    ("kind", "break_it"),
    [("interval", break_interval), ("crontab", break_crontab), ("interval", drop_schedule)],
    ids=["interval with an unknown period", "crontab with hour 99", "no schedule at all"],
)
def test_the_next_run_is_unknown_when_the_schedule_cannot_be_evaluated(kind, break_it):
    schedule = {"interval": every(60)} if kind == "interval" else {"crontab": daily_at_two()}
    task = periodic_task("broken", **schedule)
    break_it(task)
    task = PeriodicTask.objects.select_related("interval", "crontab").get(pk=task.pk)

    with pytest.raises(NextRunUnknown):
        periodic_task_next_run(task)


# --- schedule_due_at ------------------------------------------------------------------------------------


def test_an_interval_is_due_one_interval_after_the_last_run_even_when_that_is_past():
    last = datetime(2026, 1, 15, 8, 30, tzinfo=UTC)
    assert schedule_due_at(celery_schedules.schedule(timedelta(minutes=15)), last) == last + timedelta(minutes=15)


def test_a_crontab_is_due_at_its_first_time_after_the_last_run_even_when_that_is_past():
    last = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
    assert schedule_due_at(celery_schedules.crontab(minute="0", hour="2"), last) == datetime(
        2026, 1, 16, 2, 0, tzinfo=UTC
    )
    hourly = celery_schedules.crontab(minute="30")
    assert schedule_due_at(hourly, datetime(2026, 1, 15, 8, 45, tzinfo=UTC)) == datetime(2026, 1, 15, 9, 30, tzinfo=UTC)


class InAnHour(celery_schedules.BaseSchedule):
    """A schedule of another kind (as solar and clocked are): only its remaining estimate is known."""

    def remaining_estimate(self, last_run_at):
        return timedelta(hours=1)


def test_another_kind_of_schedule_is_due_after_its_remaining_estimate_when_it_is_neither_crontab_nor_interval():
    before = timezone.now()
    due = schedule_due_at(InAnHour(), datetime(2026, 1, 15, tzinfo=UTC))
    after = timezone.now()
    assert before + timedelta(hours=1) <= due <= after + timedelta(hours=1)


# --- Beat, the schedule admin and the status page agree ---------------------------------------------------------


def test_the_schedule_admin_and_the_status_page_show_the_same_next_run_when_they_list_the_same_rows(
    admin_client_logged_in,
):
    now = timezone.now()
    periodic_task("a-every-minute", interval=every(60), last_run_at=now - timedelta(seconds=20))
    periodic_task("b-nightly", crontab=daily_at_two(), last_run_at=last_two_oclock(now))
    periodic_task("c-later", start_time=now + timedelta(days=2), last_run_at=now - timedelta(seconds=10))
    periodic_task("d-off", enabled=False)
    periodic_task("e-ran-once", one_off=True, total_run_count=1)
    break_interval(periodic_task("f-broken", interval=every(7)))
    overdue = periodic_task("g-overdue", interval=every(60), last_run_at=now - timedelta(hours=1))

    before = timezone.now()
    changelist = admin_client_logged_in.get(LIST_URL).context["cl"]
    shown_by_admin = {task.name: changelist.model_admin.next_run(task) for task in changelist.result_list}
    shown_by_status_page = {row.task.name: row.next_run_at for row in schedules_overview(since=now - timedelta(days=1))}
    after = timezone.now()

    assert set(shown_by_admin) == set(shown_by_status_page)
    for name, on_status_page in shown_by_status_page.items():
        in_admin = shown_by_admin[name]
        if name == overdue.name:  # "now", as each screen was drawn
            assert before <= in_admin <= after
            assert before <= on_status_page <= after
        elif on_status_page is None:
            assert in_admin in ("—", "unknown"), name
        else:
            assert in_admin == on_status_page, name
    assert shown_by_admin["f-broken"] == "unknown"
    assert [name for name, at in shown_by_status_page.items() if at is None] == ["d-off", "e-ran-once", "f-broken"]


@pytest.mark.parametrize("kind", ["interval", "crontab"])
def test_beat_finds_the_run_due_when_the_screens_say_it_is_when_it_is_ahead(kind):
    now = timezone.now()
    if kind == "interval":
        task = periodic_task("soon", interval=every(600), last_run_at=now - timedelta(seconds=20))
    else:
        task = periodic_task("nightly", crontab=daily_at_two(), last_run_at=last_two_oclock(now))
    assert PlatformEntry(task, app=celery_app).due_at() == periodic_task_next_run(task, now=now)
