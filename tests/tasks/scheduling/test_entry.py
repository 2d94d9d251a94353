"""Beat's due times (``PlatformEntry.due_at``) for crontabs in America/New_York and Europe/Paris
through both daylight-saving changes: walked as Beat walks them (each run sent a moment after it
fell due, the next due time computed from that), every hour runs once and none twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from celery import current_app
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from tasks.scheduling.entry import PlatformEntry

pytestmark = pytest.mark.django_db

# Local night of each change in 2026 and the hourly runs (":30", UTC) Beat must send from 00:30
# local time on, five of them.
NIGHTS = [
    ("America/New_York", (2026, 3, 8), ["05:30", "06:30", "07:30", "08:30", "09:30"]),  # 02:30 is 03:30's instant
    ("America/New_York", (2026, 11, 1), ["04:30", "05:30", "07:30", "08:30", "09:30"]),  # 01:30 once, not twice
    ("Europe/Paris", (2026, 3, 29), ["23:30", "00:30", "01:30", "02:30", "03:30"]),
    ("Europe/Paris", (2026, 10, 25), ["22:30", "23:30", "00:30", "02:30", "03:30"]),
]


@pytest.mark.parametrize(("zone", "night", "expected_utc"), NIGHTS)
def test_beat_sends_each_hourly_run_once_through_the_night_the_clocks_change(zone, night, expected_utc):
    crontab = CrontabSchedule.objects.create(minute="30", hour="*", timezone=zone)
    task = PeriodicTask.objects.create(name=f"hourly {zone} {night}", task="tasks.ping", crontab=crontab)
    task.last_run_at = datetime(*night, 0, 0, tzinfo=ZoneInfo(zone)) - timedelta(minutes=10)
    recorded: list[datetime] = []  # ScheduledRun is unique per due time: a repeat is not sent again
    for _ in range(8):
        due = PlatformEntry(task, app=current_app).due_at()
        if due not in recorded:
            recorded.append(due)
        task.last_run_at = max(due, task.last_run_at) + timedelta(seconds=1)  # sent a moment later
        if len(recorded) == len(expected_utc):
            break
    assert [d.astimezone(UTC).strftime("%H:%M") for d in recorded] == expected_utc
    assert recorded == sorted(recorded)
