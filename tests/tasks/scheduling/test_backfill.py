"""Backfill: the missing runs of a window are recorded and sent once, honouring the overlap policy,
and a crontab in a local zone is backfilled across a daylight-saving change run by run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from tasks.models import ScheduledRun, SchedulePolicy
from tasks.scheduling.backfill import schedule_backfill
from tests.support.queues import purge_platform_queues

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def empty_queues(redis_client):
    purge_platform_queues()


def hourly(name: str, *, zone: str = "UTC", overlap: str = SchedulePolicy.Overlap.ALLOW) -> PeriodicTask:
    schedule = CrontabSchedule.objects.create(minute="30", hour="*", timezone=zone)
    task = PeriodicTask.objects.create(name=name, task="tasks.ping", crontab=schedule)
    SchedulePolicy.objects.create(periodic_task=task, overlap=overlap)
    return PeriodicTask.objects.get(pk=task.pk)


def beat_recorded(task: PeriodicTask, due: datetime) -> None:
    ScheduledRun.objects.create(
        periodic_task_name=task.name, due_at=due, task=task.task, task_id=f"beat-{due.timestamp()}",
        leader="beat", leader_generation=1, sent_at=due,
    )  # fmt: skip


def test_the_missing_runs_of_a_window_are_sent_once_and_beats_own_are_left_alone():
    task = hourly("hourly allow")
    start = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    beat_recorded(task, start.replace(hour=1, minute=30))
    outcome = schedule_backfill(task=task, start=start, end=start + timedelta(hours=4))
    assert [d.hour for d in outcome.sent] == [0, 2, 3] and outcome.skipped == 0
    runs = ScheduledRun.objects.filter(periodic_task_name=task.name).order_by("due_at")
    assert [(r.due_at.hour, r.leader) for r in runs] == [(0, "backfill"), (1, "beat"), (2, "backfill"), (3, "backfill")]
    assert all(r.sent_at is not None for r in runs)
    again = schedule_backfill(task=task, start=start, end=start + timedelta(hours=4))
    assert again.sent == [] and again.unsent == [], "each run is sent once"


def test_overlap_skip_sends_only_the_latest_missing_run():
    task = hourly("hourly skip", overlap=SchedulePolicy.Overlap.SKIP)
    start = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    outcome = schedule_backfill(task=task, start=start, end=start + timedelta(hours=4))
    assert [d.hour for d in outcome.sent] == [3]
    assert outcome.skipped == 3 and "overlap skip" in outcome.reason


@pytest.mark.parametrize(("zone", "night"), [("America/New_York", (2026, 11, 1)), ("Europe/Paris", (2026, 3, 29))])
def test_a_window_across_a_clock_change_is_backfilled_one_run_per_instant(zone, night):
    task = hourly(f"hourly {zone}", zone=zone)
    start = datetime(*night, 0, 0, tzinfo=ZoneInfo(zone))
    outcome = schedule_backfill(task=task, start=start, end=start + timedelta(hours=5))
    assert outcome.sent == sorted(set(outcome.sent)) and len(outcome.sent) in (4, 5)
    assert ScheduledRun.objects.filter(periodic_task_name=task.name).count() == len(outcome.sent)


def test_the_admin_action_asks_for_the_window_then_backfills(admin_client_logged_in):
    task = hourly("from the admin")
    url = reverse("admin:django_celery_beat_periodictask_changelist")
    form = admin_client_logged_in.post(url, {"action": "backfill_runs", "_selected_action": [task.pk]})
    assert form.status_code == 200 and "Send the missing runs" in form.content.decode()
    end = timezone.now().replace(minute=0, second=0, microsecond=0)
    response = admin_client_logged_in.post(
        url,
        {
            "action": "backfill_runs", "_selected_action": [task.pk], "apply": "1",
            "start": (end - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S"), "end": end.strftime("%Y-%m-%d %H:%M:%S"),
        },
        follow=True,
    )  # fmt: skip
    assert "from the admin: sent 3 run(s)." in [str(m) for m in response.context["messages"]]
    future = admin_client_logged_in.post(
        url,
        {
            "action": "backfill_runs", "_selected_action": [task.pk], "apply": "1",
            "start": end.strftime("%Y-%m-%d %H:%M:%S"),
            "end": (end + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S"),
        },
    )  # fmt: skip
    assert future.status_code == 200 and "cannot reach into the future" in future.content.decode()
