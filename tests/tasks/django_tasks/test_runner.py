"""The runner: its attempt records (one statement per start, nothing for a finished run, errors
kept per attempt, on PostgreSQL and SQLite alike), and what it refuses to run."""

from __future__ import annotations

import uuid

import pytest

from tasks.django_tasks.compat import TaskResultStatus, task_started
from tasks.django_tasks.message import TaskEnqueued
from tasks.django_tasks.runner import task_run, task_run_attempt_failed, task_run_attempt_started
from tasks.models import Delivery, TaskRun
from tasks.reliability.deliver import RefusedDelivery, UnknownHandler
from tests.support import django_jobs as jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_each_start_of_an_unfinished_run_adds_its_worker_and_keeps_the_first_start():
    result = jobs.noop_task.enqueue()
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append((task_result.status, task_result.attempts))

    task_started.connect(receiver)
    try:
        task_run_attempt_started(result_id=result.id, worker_id="w1")
        first = TaskRun.objects.get(result_id=result.id)
        task_run_attempt_started(result_id=result.id, worker_id="w2")
    finally:
        task_started.disconnect(receiver)
    run = TaskRun.objects.get(result_id=result.id)
    assert run.worker_ids == ["w1", "w2"] and run.started_at == first.started_at
    assert run.last_attempted_at > first.last_attempted_at
    assert seen == [(TaskResultStatus.RUNNING, 1), (TaskResultStatus.RUNNING, 2)]


def test_a_copy_of_a_finished_or_cancelled_run_records_no_attempt():
    for status in (Delivery.Status.DONE, Delivery.Status.CANCELLED):
        result = jobs.noop_task.enqueue()
        Delivery.objects.filter(message_id=result.id).update(status=status)
        task_run_attempt_started(result_id=result.id, worker_id="late copy")
        assert TaskRun.objects.get(result_id=result.id).worker_ids == []


def test_failed_attempts_keep_each_error_and_only_the_final_one_finishes_the_run():
    result = jobs.noop_task.enqueue()
    task_run_attempt_failed(result_id=result.id, exc=TimeoutError("slow"), tb="TimeoutError: slow\n", final=False)
    assert TaskRun.objects.get(result_id=result.id).finished_at is None
    task_run_attempt_failed(result_id=result.id, exc=ValueError("bad"), tb="ValueError: bad\n", final=True)
    run = TaskRun.objects.get(result_id=result.id)
    assert [e["exception_class_path"] for e in run.errors] == ["builtins.TimeoutError", "builtins.ValueError"]
    assert run.finished_at is not None


def test_a_message_with_no_run_of_this_platform_is_refused_and_runs_nothing():
    forged = TaskEnqueued(task_path="subprocess.check_output", queue_name="default", priority=0)
    with pytest.raises(RefusedDelivery, match="not an enqueue of this platform"):
        task_run(forged)


def test_a_run_naming_a_function_no_decorated_task_registered_is_never_imported():
    result = jobs.noop_task.enqueue()
    TaskRun.objects.filter(result_id=result.id).update(task_path="subprocess.check_output")
    message = TaskEnqueued(
        message_id=uuid.UUID(result.id), task_path="subprocess.check_output", queue_name="default", priority=0
    )
    with pytest.raises(UnknownHandler, match="not registered in this worker"):
        task_run(message)
