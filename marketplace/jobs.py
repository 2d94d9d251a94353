"""The marketplace's periodic jobs: thin Celery tasks and their default schedules.

Each job runs with no arguments (as Beat sends it), on an empty database too, and returns a
small dict that the task results keep. The logic lives in services (``marketplace.stats``,
``marketplace.token_cleanup``, ``marketplace.search``). :func:`declare_schedules` declares
the defaults that ``sync_schedules`` writes; ``MarketplaceConfig.ready()`` calls it.
"""

from __future__ import annotations

from datetime import date

from celery import shared_task
from celery.schedules import crontab

from marketplace.models import DailyStats
from marketplace.search import components_search_index_rebuild
from marketplace.stats import daily_stats_calculate, daily_stats_catch_up
from marketplace.token_cleanup import api_tokens_delete_expired
from tasks.jobs import Misfire, Overlap, PlatformTask, declare_schedule
from tasks.queues import LOW_PRIORITY

CALCULATE_DAILY_STATS = "marketplace.calculate_daily_stats"
CLEANUP_EXPIRED_TOKENS = "marketplace.cleanup_expired_tokens"
REFRESH_SEARCH_INDEX = "marketplace.refresh_search_index"
SEARCH_INDEX_BATCH_SIZE = 500


def _stats_summary(stats: DailyStats) -> dict:
    return {
        "date": stats.date.isoformat(),
        "uploads": stats.uploads,
        "downloads": stats.downloads,
        "ratings": stats.ratings,
        "active_authors": stats.active_authors,
    }


@shared_task(base=PlatformTask, name=CALCULATE_DAILY_STATS, queue=LOW_PRIORITY)
def calculate_daily_stats(day: str | None = None) -> dict:
    """Fill DailyStats for ``day`` (ISO date) alone, or, by default (as Beat runs it), for every
    missing day up to the previous UTC day and that day again (``daily_stats_catch_up``).

    Returns the numbers of the latest day computed, and ``days``: every day computed.
    """
    computed = [daily_stats_calculate(day=date.fromisoformat(day))] if day else daily_stats_catch_up()
    return {**_stats_summary(computed[-1]), "days": [stats.date.isoformat() for stats in computed]}


@shared_task(base=PlatformTask, name=CLEANUP_EXPIRED_TOKENS, queue=LOW_PRIORITY)
def cleanup_expired_tokens() -> dict:
    """Delete expired API tokens."""
    return {"deleted": api_tokens_delete_expired()}


@shared_task(base=PlatformTask, name=REFRESH_SEARCH_INDEX, queue=LOW_PRIORITY)
def refresh_search_index(batch_size: int = SEARCH_INDEX_BATCH_SIZE) -> dict:
    """Rebuild the search index of all published components, ``batch_size`` at a time."""
    return {"indexed": components_search_index_rebuild(batch_size=batch_size)}


def declare_schedules() -> None:
    """Declare the marketplace's default schedules (times are UTC: CELERY_TIMEZONE)."""
    declare_schedule(
        name="calculate_daily_stats",
        task=CALCULATE_DAILY_STATS,
        schedule=crontab(minute="0", hour="2"),
        description=(
            "Daily 02:00 UTC: DailyStats (uploads, downloads, ratings, active authors) of the previous day, "
            "and of any earlier day a late or lost run missed."
        ),
        queue=LOW_PRIORITY,
        misfire=Misfire.RUN_ONCE,
        overlap=Overlap.SKIP,
    )
    declare_schedule(
        name="cleanup_expired_tokens",
        task=CLEANUP_EXPIRED_TOKENS,
        schedule=crontab(minute="0", hour="0,12"),
        description="00:00 and 12:00 UTC: delete expired API tokens.",
        queue=LOW_PRIORITY,
        misfire=Misfire.RUN_ONCE,
        overlap=Overlap.SKIP,
    )
    declare_schedule(
        name="refresh_search_index",
        task=REFRESH_SEARCH_INDEX,
        schedule=crontab(minute="*/30"),
        description="Every 30 minutes: rebuild the component search index in batches.",
        queue=LOW_PRIORITY,
        # A missed refresh is replaced by the next one half an hour later anyway.
        misfire=Misfire.SKIP,
        overlap=Overlap.SKIP,
    )
