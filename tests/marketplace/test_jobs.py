"""The marketplace's periodic jobs on real data, and every default job through a real worker."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_results.models import TaskResult

from marketplace.jobs import calculate_daily_stats, cleanup_expired_tokens, refresh_search_index
from marketplace.models import ApiToken, Component, DailyStats, Download, Rating
from marketplace.selectors import search_components
from tasks.scheduling.declared import declared_schedules, periodic_task_run_now, schedules_sync
from tests.marketplace.factories import (
    ApiTokenFactory,
    AuthorFactory,
    ComponentFactory,
    DownloadFactory,
    RatingFactory,
)
from tests.support.waiting import wait_until

DAY = date(2026, 3, 14)


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def created_on(model, objects, when: datetime) -> None:
    # created_at is auto_now_add: move the rows to the day under test afterwards.
    model.objects.filter(pk__in=[obj.pk for obj in objects]).update(created_at=when)


@pytest.fixture
def activity_around_day():
    """On DAY: 3 uploads by 2 authors, 4 downloads, 2 ratings. The days before and after: noise."""
    alice, bob = AuthorFactory(), AuthorFactory()
    uploads = [ComponentFactory(author=alice), ComponentFactory(author=alice), ComponentFactory(author=bob)]
    created_on(Component, uploads, at(DAY, 9))
    created_on(Component, [ComponentFactory(author=bob)], at(DAY - timedelta(days=1), 23))
    created_on(Component, [ComponentFactory()], at(DAY + timedelta(days=1), 0))
    created_on(Download, [DownloadFactory(component=uploads[0]) for _ in range(4)], at(DAY, 0))
    created_on(Download, [DownloadFactory(component=uploads[0])], at(DAY + timedelta(days=1), 1))
    created_on(Rating, [RatingFactory(component=uploads[1]) for _ in range(2)], at(DAY, 23))
    created_on(Rating, [RatingFactory(component=uploads[1])], at(DAY - timedelta(days=1), 12))


@pytest.mark.django_db
def test_daily_stats_count_the_uploads_downloads_ratings_and_authors_of_that_day(activity_around_day):
    result = calculate_daily_stats(DAY.isoformat())

    assert result == {
        "date": "2026-03-14",
        "uploads": 3,
        "downloads": 4,
        "ratings": 2,
        "active_authors": 2,
        "days": ["2026-03-14"],
    }
    stats = DailyStats.objects.get(date=DAY)
    assert (stats.uploads, stats.downloads, stats.ratings, stats.active_authors) == (3, 4, 2, 2)


@pytest.mark.django_db
def test_daily_stats_run_twice_for_a_day_keep_one_row_with_the_new_numbers(activity_around_day):
    calculate_daily_stats(DAY.isoformat())
    created_on(Download, [DownloadFactory()], at(DAY, 12))

    calculate_daily_stats(DAY.isoformat())

    assert DailyStats.objects.filter(date=DAY).count() == 1
    assert DailyStats.objects.get(date=DAY).downloads == 5


@pytest.mark.django_db
def test_daily_stats_without_arguments_cover_the_previous_utc_day_on_an_empty_database():
    result = calculate_daily_stats()

    yesterday = (timezone.now().astimezone(UTC) - timedelta(days=1)).date().isoformat()
    assert result == {
        "date": yesterday,
        "uploads": 0,
        "downloads": 0,
        "ratings": 0,
        "active_authors": 0,
        "days": [yesterday],
    }
    assert [day.isoformat() for day in DailyStats.objects.values_list("date", flat=True)] == [yesterday]


def numbers(day: date) -> tuple[int, int, int, int]:
    stats = DailyStats.objects.get(date=day)
    return stats.uploads, stats.downloads, stats.ratings, stats.active_authors


@pytest.fixture
def now_is(monkeypatch):
    """Freeze "now" (``django.utils.timezone.now``) at the given time."""

    def freeze(when: datetime) -> None:
        monkeypatch.setattr(timezone, "now", lambda: when)

    return freeze


@pytest.mark.django_db
def test_daily_stats_run_late_compute_the_day_they_were_due_for_and_every_day_since(activity_around_day, now_is):
    calculate_daily_stats((DAY - timedelta(days=1)).isoformat())  # the last day computed on time
    now_is(at(DAY + timedelta(days=2), 2))  # the run due a day earlier (for DAY) comes now

    result = calculate_daily_stats()

    assert result["days"] == [DAY.isoformat(), (DAY + timedelta(days=1)).isoformat()]
    assert numbers(DAY) == (3, 4, 2, 2)
    assert numbers(DAY + timedelta(days=1)) == (1, 1, 0, 1)


@pytest.mark.django_db
def test_daily_stats_requeued_count_each_day_once(activity_around_day, now_is):
    now_is(at(DAY + timedelta(days=2), 2))
    first = calculate_daily_stats()

    again = calculate_daily_stats()  # the same run delivered a second time

    assert first["days"] == [(DAY + timedelta(days=n)).isoformat() for n in (-1, 0, 1)]
    assert again["days"] == [(DAY + timedelta(days=1)).isoformat()]  # only yesterday, recomputed
    assert DailyStats.objects.count() == 3
    assert numbers(DAY) == (3, 4, 2, 2)
    assert numbers(DAY + timedelta(days=1)) == (1, 1, 0, 1)


@pytest.mark.django_db
def test_daily_stats_fill_a_day_whose_run_was_lost_when_a_later_one_was_computed(activity_around_day, now_is):
    for day in (DAY - timedelta(days=1), DAY + timedelta(days=1)):
        calculate_daily_stats(day.isoformat())
    now_is(at(DAY + timedelta(days=3), 2))

    result = calculate_daily_stats()

    assert result["days"] == [(DAY + timedelta(days=n)).isoformat() for n in (0, 2)]
    assert numbers(DAY) == (3, 4, 2, 2)


@pytest.mark.django_db
def test_daily_stats_catch_up_at_most_thirty_days_when_nothing_was_computed_for_longer(now_is):
    created_on(Component, [ComponentFactory()], at(DAY - timedelta(days=100), 12))
    now_is(at(DAY + timedelta(days=1), 2))

    result = calculate_daily_stats()

    assert len(result["days"]) == 30
    assert (result["days"][0], result["days"][-1]) == ((DAY - timedelta(days=29)).isoformat(), DAY.isoformat())


@pytest.mark.django_db
def test_token_cleanup_deletes_expired_tokens_only():
    expired = [ApiTokenFactory(expires_at=timezone.now() - timedelta(minutes=1)) for _ in range(2)]
    valid = ApiTokenFactory(expires_at=timezone.now() + timedelta(days=1))

    assert cleanup_expired_tokens() == {"deleted": 2}

    assert list(ApiToken.objects.values_list("pk", flat=True)) == [valid.pk]
    assert not ApiToken.objects.filter(pk__in=[token.pk for token in expired]).exists()
    assert cleanup_expired_tokens() == {"deleted": 0}


@pytest.mark.django_db
def test_search_finds_a_new_component_after_the_index_refresh():
    component = ComponentFactory(name="Quasar Widget", description="Renders quasars.", status="published")
    Component.objects.filter(pk=component.pk).update(search_document=None, indexed_at=None)
    assert not search_components("quasar").filter(pk=component.pk).exists()

    assert refresh_search_index(batch_size=1) == {"indexed": 1}

    assert list(search_components("quasar")) == [component]
    assert refresh_search_index() == {"indexed": 1}


@pytest.mark.slow
def test_every_default_job_runs_without_arguments_on_an_empty_database_and_stores_its_result(
    celery_worker_process,
):
    schedules_sync()
    for task in PeriodicTask.objects.filter(name__in=declared_schedules()):
        periodic_task_run_now(periodic_task=task)

    def finished():
        rows = TaskResult.objects.filter(periodic_task_name__in=declared_schedules(), status__in=["SUCCESS", "FAILURE"])
        return list(rows) if rows.count() == len(declared_schedules()) else None

    results = wait_until(finished, timeout=30, message="every default job finished")
    assert {row.status for row in results} == {"SUCCESS"}, [(r.task_name, r.traceback) for r in results]
    assert {row.periodic_task_name: row.task_name for row in results} == {
        name: spec.task for name, spec in declared_schedules().items()
    }
    assert {(row.task_args, row.task_kwargs) for row in results} == {('"()"', '"{}"')}, results[0].task_args
    assert get_user_model().objects.count() == 0
