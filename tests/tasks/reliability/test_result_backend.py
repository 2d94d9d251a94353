"""``PlatformResultBackend`` (``tasks.reliability.result_backend``): a task run's result writes wait
for the database, or give the task back to the queue, never leave it acknowledged unrecorded.

Tasks run through Celery's own tracer (``build_tracer``, as a worker's pool process runs them),
in this process; the database is made unavailable for a number of writes by the test.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from celery import shared_task, states
from celery._state import _task_stack
from celery.app.trace import build_tracer
from celery.exceptions import Reject
from django.db import DatabaseError
from django.db.utils import InterfaceError, OperationalError
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from config.celery_app import app
from tasks.models import DeadLetter
from tasks.reliability import result_backend
from tasks.reliability.platform_task import PlatformTask, TransientError
from tasks.reliability.result_backend import PlatformResultBackend, database_unavailable

pytestmark = pytest.mark.django_db(transaction=True)

ran: list[str] = []  # ids of the runs of the tasks below


@shared_task(base=PlatformTask, bind=True, name="tests.result_backend.job")
def job(self):
    ran.append(self.request.id)
    return "ran"


@shared_task(base=PlatformTask, bind=True, name="tests.result_backend.failing_job", max_retries=0)
def failing_job(self):
    ran.append(self.request.id)
    raise TransientError("never works")


@pytest.fixture(autouse=True)
def quick_waits(settings, monkeypatch):
    """A short wait and no real sleeping: the clock is not under test."""
    settings.TASKS_DATABASE_WAIT = 2.0
    clock = [0.0]
    monkeypatch.setattr(result_backend.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(result_backend.time, "sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    ran.clear()


@pytest.fixture
def database_down(monkeypatch):
    """``down(n, states=...)``: the next ``n`` result writes (of those states) fail as if the
    database were unreachable; returns the list of the states whose writes failed."""
    failed: list[str] = []

    def down(times: int, *, error: type[Exception] = OperationalError, only: tuple[str, ...] = ()) -> list[str]:
        real = DatabaseBackend._store_result

        def store(self, task_id, result, state, *args, **kwargs):
            if len(failed) < times and (not only or state in only):
                failed.append(state)
                raise error("connection refused")
            return real(self, task_id, result, state, *args, **kwargs)

        monkeypatch.setattr(DatabaseBackend, "_store_result", store)
        return failed

    return down


def run_in_worker(task, task_id: str | None = None):
    """Run ``task`` as a worker's pool process does: Celery's tracer, not eager."""
    task_id = task_id or str(uuid.uuid4())
    tracer = build_tracer(task.name, task, app=app, eager=False)
    return task_id, tracer(task_id, [], {}, {"id": task_id, "task": task.name, "delivery_info": {}})


def statuses(task_id: str) -> list[str]:
    return list(TaskResult.objects.filter(task_id=task_id).values_list("status", flat=True))


def test_the_app_uses_the_platform_backend_when_configured():
    assert isinstance(app.backend, PlatformResultBackend)


@pytest.mark.parametrize("error", [OperationalError, InterfaceError])
def test_connection_errors_count_as_an_unavailable_database_when_raised(error):
    assert database_unavailable(error("connection refused"))
    assert not database_unavailable(DatabaseError("syntax error"))
    assert not database_unavailable(ValueError("x"))


def test_a_task_started_while_the_database_blips_waits_then_runs_once_and_stores_success(database_down):
    failed = database_down(2)
    task_id, _ = run_in_worker(job)
    assert failed == [states.STARTED, states.STARTED]
    assert ran == [task_id]
    assert statuses(task_id) == [states.SUCCESS]


def test_a_task_started_while_the_database_stays_down_is_given_back_before_it_runs(database_down):
    failed = database_down(1000)
    with pytest.raises(Reject) as rejected:
        run_in_worker(job)
    assert rejected.value.requeue is True
    assert ran == []  # the body never ran: a second delivery runs it for the first time
    assert set(failed) == {states.STARTED} and len(failed) > 1  # it waited, trying again


def test_a_success_that_cannot_be_stored_gives_the_task_back_when_the_database_stays_down(database_down):
    database_down(1000, only=(states.SUCCESS,))
    with pytest.raises(Reject) as rejected:
        run_in_worker(job)
    assert rejected.value.requeue is True


def test_a_final_failure_is_stored_with_its_dead_letter_after_a_database_blip(database_down):
    failed = database_down(2, only=(states.FAILURE,))
    task_id, _ = run_in_worker(failing_job)
    assert failed == [states.FAILURE, states.FAILURE]
    assert statuses(task_id) == [states.FAILURE]
    assert DeadLetter.objects.get().task_id == task_id


def test_a_final_failure_gives_the_task_back_when_the_database_stays_down(database_down):
    database_down(1000, only=(states.FAILURE,))
    with pytest.raises(Reject) as rejected:
        run_in_worker(failing_job)
    assert rejected.value.requeue is True
    assert not DeadLetter.objects.exists()


def test_a_dead_letter_that_cannot_be_written_gives_the_task_back_when_the_database_stays_down(monkeypatch):
    def database_gone(**fields):
        raise OperationalError("connection refused")

    monkeypatch.setattr("tasks.reliability.platform_task.dead_letter_record", database_gone)
    with pytest.raises(Reject) as rejected:
        run_in_worker(failing_job)
    assert rejected.value.requeue is True


def test_a_retry_result_the_database_refuses_is_left_out_and_the_task_goes_on(database_down, caplog):
    failed = database_down(1, only=(states.RETRY,))
    backend = app.backend
    failing_job.push_request(id="r-1", called_directly=False, is_eager=False)
    _task_stack.push(failing_job)  # as the tracer does while a retry is stored
    try:
        backend.mark_as_retry("r-1", TransientError("x"), request=failing_job.request)  # does not raise
    finally:
        _task_stack.pop()
        failing_job.pop_request()
    assert failed == [states.RETRY]
    assert statuses("r-1") == []
    assert "RETRY of task r-1 not recorded" in caplog.text


def test_a_retry_stored_after_a_later_attempt_finished_leaves_that_attempts_result():
    """The retry is published before its RETRY state is stored; the next attempt, on another pool
    process, can finish first. Its SUCCESS stands (the RETRY came late)."""
    backend = app.backend
    backend.mark_as_done("r-2", "done", request=None)
    failing_job.push_request(id="r-2", called_directly=False, is_eager=False)
    _task_stack.push(failing_job)
    try:
        backend.mark_as_retry("r-2", TransientError("x"), request=failing_job.request)
    finally:
        _task_stack.pop()
        failing_job.pop_request()
    assert statuses("r-2") == [states.SUCCESS]


def test_writes_outside_a_task_run_fail_at_once_as_before(database_down):
    failed = database_down(1)
    with pytest.raises(OperationalError):
        app.backend.store_result("web-1", "x", states.SUCCESS)
    assert failed == [states.SUCCESS]


def test_other_database_errors_are_raised_at_once_when_a_task_stores_its_result(database_down, caplog):
    caplog.set_level(logging.WARNING, logger=result_backend.__name__)
    failed = database_down(1, error=DatabaseError, only=(states.SUCCESS,))
    run_in_worker(job)
    assert failed == [states.SUCCESS]  # one try: no wait
    assert "database unavailable" not in caplog.text
