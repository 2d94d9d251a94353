"""Daily marketplace statistics: the services behind the ``calculate_daily_stats`` job.

A period job must not trust the day it happens to run on: a run that comes late (Beat or the
workers were down, the database was away and the task went back to the queue) or twice (a
requeue) would compute the wrong day, and a day whose run was lost would never be computed. So
the job catches up: each run fills every day without statistics from the last
``CATCH_UP_DAYS`` days (or since the first day with data) up to yesterday, and computes
yesterday again. Each day is computed on its own and overwritten by a second run, never added.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django.db import transaction
from django.utils import timezone

from marketplace.models import Component, DailyStats, Download, Rating

# How far back a run looks for days without statistics.
CATCH_UP_DAYS = 30


def previous_utc_day(*, now: datetime | None = None) -> date:
    """The UTC calendar day before ``now`` (default: the current time)."""
    return ((now or timezone.now()).astimezone(UTC) - timedelta(days=1)).date()


def daily_stats_calculate(*, day: date) -> DailyStats:
    """Count the activity of UTC day ``day`` into its DailyStats row; running it again overwrites it.

    uploads: components created that day; downloads and ratings: rows created that day;
    active_authors: distinct authors who uploaded that day.
    """
    start = datetime.combine(day, time.min, tzinfo=UTC)
    that_day = {"created_at__gte": start, "created_at__lt": start + timedelta(days=1)}
    uploads = Component.objects.filter(**that_day)
    with transaction.atomic():
        stats, _ = DailyStats.objects.update_or_create(
            date=day,
            defaults={
                "uploads": uploads.count(),
                "downloads": Download.objects.filter(**that_day).count(),
                "ratings": Rating.objects.filter(**that_day).count(),
                "active_authors": uploads.values("author_id").distinct().count(),
            },
        )
    return stats


def first_activity_day() -> date | None:
    """The UTC day of the earliest upload, download or rating; None on an empty marketplace."""
    firsts = [
        first
        for model in (Component, Download, Rating)
        if (first := model.objects.order_by("created_at").values_list("created_at", flat=True).first())
    ]
    return min(firsts).astimezone(UTC).date() if firsts else None


def daily_stats_missing_days(*, until: date, horizon_days: int = CATCH_UP_DAYS) -> list[date]:
    """Days up to ``until`` (at most ``horizon_days`` back, none before the first activity) that
    have no DailyStats row, oldest first; ``until`` itself is always included."""
    first = first_activity_day()
    # Nothing happened yet: only the day asked for.
    start = until if first is None else max(until - timedelta(days=horizon_days - 1), min(first, until))
    window = [start + timedelta(days=n) for n in range((until - start).days + 1)]
    computed = set(DailyStats.objects.filter(date__range=(start, until)).values_list("date", flat=True))
    return [day for day in window if day not in computed or day == until]


def daily_stats_catch_up(*, now: datetime | None = None, horizon_days: int = CATCH_UP_DAYS) -> list[DailyStats]:
    """Compute every missing day up to the UTC day before ``now``, and that day again (see the
    module docstring); return the rows computed, oldest first."""
    days = daily_stats_missing_days(until=previous_utc_day(now=now), horizon_days=horizon_days)
    return [daily_stats_calculate(day=day) for day in days]
