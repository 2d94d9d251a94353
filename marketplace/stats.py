"""Daily marketplace statistics: the service behind the ``calculate_daily_stats`` job."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django.db import transaction
from django.utils import timezone

from marketplace.models import Component, DailyStats, Download, Rating


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
