"""``task_result_success_sql``: the same row django-celery-results would write, in one statement."""

from datetime import timedelta

import pytest
from celery import states
from celery.app.task import Context
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_results.models import TaskResult

from config.celery_app import app
from tasks.messaging.round_trips import execute_together
from tasks.reliability.task_results import task_result_success_sql

pytestmark = pytest.mark.django_db

COMPARED = ["status", "result", "content_type", "content_encoding", "meta", "task_name", "task_args", "task_kwargs"]
COMPARED += ["worker", "periodic_task_name", "traceback", "date_started"]


def store_success(task_id: str) -> None:
    execute_together([task_result_success_sql(backend=app.backend, request=_request(task_id), result="done")])


def _request(task_id: str) -> Context:
    return Context(
        id=task_id, task="tasks.deliver", argsrepr="(an event, a.handler)", kwargsrepr="{}", hostname="w1@host"
    )


def test_the_row_is_the_one_the_result_backend_writes():
    app.backend.store_result("by-backend", "done", states.SUCCESS, request=_request("by-backend"))
    with CaptureQueriesContext(connection) as queries:
        store_success("by-platform")
    assert len(queries) == 1
    expected = TaskResult.objects.filter(task_id="by-backend").values(*COMPARED).get()
    stored = TaskResult.objects.filter(task_id="by-platform").values(*COMPARED).get()
    assert stored == expected
    assert stored["result"] == '"done"'
    assert TaskResult.objects.get(task_id="by-platform").date_done is not None


def test_a_retry_row_becomes_the_success_and_keeps_its_creation_time():
    app.backend.mark_as_retry("retried", RuntimeError("first attempt"), "Traceback ...", request=_request("retried"))
    created = timezone.now() - timedelta(minutes=5)
    TaskResult.objects.filter(task_id="retried").update(date_created=created)
    store_success("retried")
    row = TaskResult.objects.get(task_id="retried")
    assert (row.status, row.result, row.traceback, row.date_created) == (states.SUCCESS, '"done"', None, created)
    assert TaskResult.objects.count() == 1
