"""The admin's platform status page: access, content, and index-only reads of task results."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from tasks.django_tasks.message import TaskEnqueued
from tasks.models import BeatHeartbeat, DeadLetter
from tasks.monitoring import selectors
from tasks.monitoring.status_views import admin_url, chart_bars
from tests.support.query_plans import full_scans

STATUS_URL = "admin:platform_status"


@pytest.fixture
def quick_broker_reads(settings):
    settings.STATUS_INSPECT_TIMEOUT = 0.3
    settings.STATUS_BROKER_TIMEOUT = 2


def task_result(name: str, status: str, done_ago: timedelta, periodic: str | None = None) -> TaskResult:
    row = TaskResult.objects.create(task_id=f"id-{TaskResult.objects.count()}-{name}", task_name=name, status=status)
    TaskResult.objects.filter(pk=row.pk).update(date_done=timezone.now() - done_ago, periodic_task_name=periodic)
    return row


def test_status_page_redirects_to_the_login_when_anonymous(client, db):
    response = client.get(reverse(STATUS_URL))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_status_page_is_refused_when_the_user_is_not_staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("visitor", password="pw"))
    response = client.get(reverse(STATUS_URL))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_status_page_is_403_for_staff_without_the_dead_letter_view_permission(client, staff_with):
    client.force_login(staff_with("django_celery_beat.view_periodictask"))
    assert client.get(reverse(STATUS_URL)).status_code == 403
    assert reverse(STATUS_URL) not in client.get(reverse("admin:index")).content.decode()


@pytest.mark.django_db(transaction=True)
def test_status_page_shows_schedules_and_failures_only_with_their_own_view_permissions(
    client, staff_with, redis_client, quick_broker_reads
):
    now = timezone.now()
    DeadLetter.objects.create(
        task_name="tasks.deliver", handler="notify_author", exception_type="SMTPError",
        first_failed_at=now, last_failed_at=now,
    )  # fmt: skip
    task_result("reports.daily", "FAILURE", timedelta(hours=2))
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="secret nightly export", task="tasks.ping", interval=every_minute)

    client.force_login(staff_with("tasks.view_deadletter"))
    response = client.get(reverse(STATUS_URL))
    html = response.content.decode()
    assert response.status_code == 200
    assert "SMTPError" in html and reverse(STATUS_URL) in client.get(reverse("admin:index")).content.decode()
    assert "secret nightly export" not in html and "reports.daily" not in html

    client.force_login(
        staff_with(
            "tasks.view_deadletter", "django_celery_beat.view_periodictask", "django_celery_results.view_taskresult"
        )
    )
    html = client.get(reverse(STATUS_URL)).content.decode()
    assert "secret nightly export" in html and "reports.daily" in html


def test_admin_requires_login_for_its_index(client, db):
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302


def test_admin_index_links_to_the_status_page_and_flower(admin_client_logged_in, settings):
    settings.FLOWER_URL = "http://flower.example:5555/"
    content = admin_client_logged_in.get(reverse("admin:index")).content.decode()
    assert f'href="{reverse(STATUS_URL)}"' in content
    assert 'href="http://flower.example:5555/"' in content


@pytest.mark.django_db(transaction=True)
def test_status_page_shows_beat_failures_dead_letters_schedules_and_the_chart(
    admin_client_logged_in, redis_client, quick_broker_reads, settings
):
    now = timezone.now()
    BeatHeartbeat.objects.create(name="beat", leader="beat-host:4242", started_at=now, last_tick_at=now)
    dead = DeadLetter.objects.create(
        task_name="tasks.deliver", handler="notify_author", exception_type="SMTPError",
        first_failed_at=now, last_failed_at=now,
    )  # fmt: skip
    task_result("reports.daily", "FAILURE", timedelta(hours=2))
    task_result("reports.daily", "FAILURE", timedelta(hours=3))
    task_result("reports.daily", "FAILURE", timedelta(hours=30))  # outside the 24 h window
    task_result("tasks.ping", "SUCCESS", timedelta(minutes=2), periodic="ping every minute")
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="ping every minute", task="tasks.ping", interval=every_minute)

    response = admin_client_logged_in.get(reverse(STATUS_URL))

    assert response.status_code == 200
    html = response.content.decode()
    assert f'<meta http-equiv="refresh" content="{settings.STATUS_PAGE_REFRESH_SECONDS}">' in html
    assert "beat-host:4242" in html
    assert "No worker online" in html or "Could not inspect workers" in html
    snapshot = response.context["snapshot"]
    assert [(f["task_name"], f["failures"]) for f in snapshot.failures] == [("reports.daily", 2)]
    assert snapshot.dead_letter_count == 1
    assert "SMTPError" in html
    (schedule,) = snapshot.schedules
    assert schedule.last_status == "SUCCESS"
    assert schedule.punctuality.state in ("no runs due", "missed")
    assert 'class="punctuality' in html
    assert schedule.next_run_at is not None
    assert {q.name for q in snapshot.queues} == {"high", "default", "low"}
    assert html.count('class="total"') == 60
    dead_letter_list = admin_url("tasks_deadletter_changelist")
    if dead_letter_list:  # the DeadLetter admin is registered by its own module
        assert f"{dead_letter_list}?status__exact=dead" in html
        assert admin_url("tasks_deadletter_change", dead.pk) in html


def test_admin_url_is_empty_when_the_admin_page_does_not_exist():
    assert admin_url("tasks_nosuchmodel_changelist") == ""


def test_chart_scales_bars_to_the_busiest_minute():
    minute = timezone.now().replace(second=0, microsecond=0)
    bars = chart_bars([{"minute": minute, "total": 10, "failed": 5}, {"minute": minute, "total": 0, "failed": 0}])
    assert bars[0]["total_height"] == 120
    assert bars[0]["failed_height"] == 60
    assert bars[1]["total_height"] == 0
    assert bars[1]["x"] == 10


TABLE = "django_celery_results_taskresult"


def full_scans_of_task_results(sql: str) -> list[str]:
    """How the database would read the task results table for ``sql`` without searching an index."""
    return full_scans(sql, TABLE)


@pytest.mark.django_db
def test_task_result_reads_use_indexes_and_a_time_window():
    """With a million rows only indexed, windowed reads stay fast: no full scan, no unbounded COUNT."""
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="nightly", task="tasks.ping", interval=every_minute)
    task_result("tasks.ping", "SUCCESS", timedelta(minutes=1), periodic="nightly")
    now = timezone.now()
    day_ago = now - timedelta(hours=24)

    with CaptureQueriesContext(connection) as captured:
        selectors.failures_by_task(since=day_ago)
        selectors.schedules_overview(since=day_ago, now=now)
        selectors.tasks_per_minute(since=now - timedelta(minutes=59), now=now)

    reads = [q["sql"] for q in captured.captured_queries if TABLE in q["sql"]]
    assert len(reads) == 4
    for sql in reads:
        assert re.search(r'"date_done" >= ', sql), sql
        assert full_scans_of_task_results(sql) == [], sql


def test_a_dead_lettered_django_task_is_listed_by_its_task_name(
    admin_client_logged_in, redis_client, quick_broker_reads
):
    task_path = "tests.support.django_jobs.failing_task_value_error"
    message = TaskEnqueued(task_path=task_path, queue_name="default", priority=0)
    payload = message.to_json()
    now = timezone.now()
    DeadLetter.objects.create(
        task_name="tasks.deliver", handler="tasks.django_tasks.runner.task_run", message_type=payload["type"],
        payload=payload, exception_type="ValueError", first_failed_at=now, last_failed_at=now,
    )  # fmt: skip
    DeadLetter.objects.create(
        task_name="tasks.deliver", handler="h", message_type="gone.type", payload={"type": "gone.type", "data": {}},
        exception_type="KeyError", first_failed_at=now, last_failed_at=now,
    )  # fmt: skip
    html = admin_client_logged_in.get(reverse(STATUS_URL)).content.decode()
    assert "Django task tests.support.django_jobs.failing_task_value_error" in html
    assert ">tasks.deliver<" in html, "a payload this code cannot read is listed by its task name"
