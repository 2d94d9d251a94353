"""Worker database connections: kept across tasks (``CONN_MAX_AGE``), replaced when they break."""

from types import SimpleNamespace

import pytest
from celery import current_app
from django.db import connection
from django_celery_results.models import TaskResult

from tasks.reliability import worker_connections
from tests.support.processes import CeleryWorker, process_env
from tests.support.waiting import wait_until


@pytest.mark.parametrize(("eager", "closes"), [(False, 1), (True, 0)])
def test_connections_are_checked_around_worker_tasks_but_not_eager_ones(monkeypatch, eager, closes):
    calls = []
    monkeypatch.setattr(worker_connections, "close_old_connections", lambda: calls.append(1))
    task = SimpleNamespace(request=SimpleNamespace(is_eager=eager))
    worker_connections.close_old_task_connections(sender=task, task=task, task_id="t1")
    assert len(calls) == closes


def _session_of_new_task() -> int:
    task_id = current_app.send_task("tests.database_session").id
    row = wait_until(
        lambda: TaskResult.objects.filter(task_id=task_id, status="SUCCESS").first(),
        timeout=30,
        message="tests.database_session result",
    )
    return int(row.result)


@pytest.mark.slow
@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite connections are not kept (CONN_MAX_AGE 0)")
@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_its_connection_and_replaces_a_broken_one(redis_client):
    worker = CeleryWorker(
        concurrency=1, env=process_env(CONN_MAX_AGE="60"), extra_args=("--include", "tests.support.connection_tasks")
    )
    with worker:
        sessions = [_session_of_new_task() for _ in range(3)]
        assert len(set(sessions)) == 1, "each task opened a new database connection"

        with connection.cursor() as cursor:  # the database drops the worker's connection
            cursor.execute("SELECT pg_terminate_backend(%s)", [sessions[0]])
        after = _session_of_new_task()  # the health check finds it broken and reconnects
    assert after != sessions[0]
