"""The jobs view (the Deliveries admin): filters and search find the right deliveries, every query
a list page runs searches an index (the plans are checked, as the status page's are), and the
actions apply to a whole filtered selection."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult

from tasks.models import DeadLetter, Delivery
from tasks.reliability.jobs_view import deliveries_search
from tests.support.flow_limit_handlers import NOTIFY_HANDLER, SCAN_HANDLER
from tests.support.query_plans import full_scans
from tests.support.queues import purge_platform_queues

pytestmark = pytest.mark.django_db
Status = Delivery.Status
LIST = reverse("admin:tasks_delivery_changelist")
TABLE = Delivery._meta.db_table


@pytest.fixture(autouse=True)
def handlers(flow_limited_handlers):
    return


def delivery(*, handler: str = NOTIFY_HANDLER, status: str = Status.DONE, queue: str = "default", **data) -> Delivery:
    message_id = uuid.uuid4()
    return Delivery.objects.create(
        message_id=message_id,
        handler=handler,
        message_type="tests.PartnerNotified",
        payload={"type": "tests.PartnerNotified", "data": {"message_id": str(message_id), **data}},
        queue=queue,
        status=status,
        task_id=str(uuid.uuid4()),
    )


def page_rows(client, url: str) -> list:
    """The rows an admin list page shows."""
    response = client.get(url)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def found(term: str) -> set[int]:
    return set(deliveries_search(Delivery.objects.all(), term).values_list("pk", flat=True))


def test_search_finds_a_delivery_by_id_message_id_task_id_and_argument_words():
    widget = delivery(name="blue widget", author="ada@example.com", n=4711)
    other = delivery(name="red gadget", n=42)
    assert found(str(widget.pk)) == {widget.pk}
    assert found(str(widget.message_id)) == {widget.pk}
    assert found(widget.task_id) == {widget.pk}
    assert found("widget") == {widget.pk}
    assert found("blue widget") == {widget.pk}
    assert found("gadget") == {other.pk}
    assert found("  ") == {widget.pk, other.pk}


def test_the_filters_narrow_by_queue_handler_and_time(admin_client_logged_in):
    low = delivery(queue="low")
    scan = delivery(handler=SCAN_HANDLER, status=Status.WAITING)
    old = delivery()
    Delivery.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=30))

    def listed(query: str) -> set[int]:
        return {row.pk for row in page_rows(admin_client_logged_in, f"{LIST}?{query}")}

    assert listed("queue=low") == {low.pk}
    assert listed(f"handler={SCAN_HANDLER}") == {scan.pk}
    assert listed("status__exact=waiting") == {scan.pk}
    assert listed("created=24h") == {low.pk, scan.pk}
    assert listed("created=older") == {old.pk}
    assert listed(f"q={scan.message_id}") == {scan.pk}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plans at scale are PostgreSQL's")
@pytest.mark.parametrize(
    "query",
    [
        "status__exact=dead",
        "queue=low",
        f"handler={SCAN_HANDLER}",
        "created=1h",
        "created=older",
        "q=12345",
        "q=6d1f5e8a-3c2b-4f7e-9a10-1b2c3d4e5f60",  # an id: the search by message or task id
        "q=widget",
        f"status__exact=waiting&handler={SCAN_HANDLER}&created=24h",
    ],
)
def test_every_query_of_a_filtered_or_searched_list_searches_an_index(admin_client_logged_in, query):
    for n in range(30):
        delivery(status=Status.DEAD if n % 3 else Status.DONE, name=f"widget {n}")
    with CaptureQueriesContext(connection) as queries:
        assert admin_client_logged_in.get(f"{LIST}?{query}").status_code == 200
    reads = [
        q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT") and f'FROM "{TABLE}"' in q["sql"]
    ]
    assert reads, "the page read the deliveries"
    for sql in reads:
        assert full_scans(sql, TABLE) == [], sql


@pytest.mark.django_db(transaction=True)
def test_requeue_sends_the_dead_ones_of_a_filtered_selection_and_leaves_the_rest(admin_client_logged_in, redis_client):
    purge_platform_queues()
    dead = delivery(status=Status.DEAD)
    letter = DeadLetter.objects.create(
        task_name="tasks.deliver",
        task_id=dead.task_id,
        message_id=dead.message_id,
        handler=dead.handler,
        queue="default",
        first_failed_at=timezone.now(),
        last_failed_at=timezone.now(),
    )
    done = delivery()
    response = admin_client_logged_in.post(
        f"{LIST}?created=24h",
        {"action": "requeue_dead_deliveries", "select_across": "1", "index": "0", "_selected_action": [done.pk]},
        follow=True,
    )
    assert "Requeued 1 dead delivery" in response.content.decode()
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.REQUEUED
    assert Delivery.objects.get(pk=dead.pk).status == Status.PENDING
    assert Delivery.objects.get(pk=done.pk).status == Status.DONE


def test_run_delayed_now_makes_the_selected_delayed_deliveries_due(admin_client_logged_in):
    later = timezone.now() + timedelta(hours=1)
    delayed = delivery(status=Status.DELAYED)
    running = delivery(status=Status.RUNNING)
    Delivery.objects.filter(pk__in=[delayed.pk, running.pk]).update(run_after=later)
    admin_client_logged_in.post(
        LIST, {"action": "run_delayed_now", "select_across": "1", "index": "0", "_selected_action": [delayed.pk]}
    )
    assert Delivery.objects.get(pk=delayed.pk).run_after <= timezone.now()
    assert Delivery.objects.get(pk=running.pk).run_after == later


RESULTS = reverse("admin:django_celery_results_taskresult_changelist")
RESULTS_TABLE = TaskResult._meta.db_table


def test_task_results_filter_by_task_and_finish_time_and_search_by_task_id(admin_client_logged_in):
    recent = TaskResult.objects.create(task_id="recent-1", task_name="tasks.deliver", status="SUCCESS")
    old = TaskResult.objects.create(task_id="old-1", task_name="tasks.ping", status="FAILURE")
    TaskResult.objects.filter(pk=old.pk).update(date_done=timezone.now() - timedelta(days=30))

    def listed(query: str) -> set[str]:
        return {row.task_id for row in page_rows(admin_client_logged_in, f"{RESULTS}?{query}")}

    assert listed("task_name=tasks.deliver") == {recent.task_id}
    assert listed("done=24h") == {recent.task_id}
    assert listed("done=older") == {old.task_id}
    assert listed("q=old-1") == {old.task_id}
    assert listed("status__exact=FAILURE") == {old.task_id}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plans at scale are PostgreSQL's")
@pytest.mark.parametrize(
    "query",
    [
        "status__exact=FAILURE",
        "task_name=tasks.deliver",
        "periodic_task_name=nightly",
        "done=1h",
        "done=older",
        "q=abc",
    ],
)
def test_every_query_of_a_filtered_task_result_list_searches_an_index(admin_client_logged_in, query):
    for n in range(30):
        TaskResult.objects.create(task_id=f"t-{n}", task_name="tasks.deliver", status="SUCCESS")
    with CaptureQueriesContext(connection) as queries:
        assert admin_client_logged_in.get(f"{RESULTS}?{query}").status_code == 200
    reads = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and f'FROM "{RESULTS_TABLE}"' in q["sql"]
    ]
    assert reads, "the page read the task results"
    for sql in reads:
        assert full_scans(sql, RESULTS_TABLE) == [], sql
