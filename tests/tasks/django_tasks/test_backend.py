"""``PlatformTaskBackend``: the backport's expectations of a backend (enqueue, results, defer,
priority, exceptions, validation), on the platform's outbox and deliveries.

The tests that run tasks use a real worker (``--include tests.support.django_jobs``), as the
backport's own backend tests run a real worker loop."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from tasks.django_tasks.backend import PlatformTaskBackend
from tasks.django_tasks.compat import (
    InvalidTask,
    Task,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    task,
    task_backends,
    task_enqueued,
)
from tasks.django_tasks.message import RUN_HANDLER, platform_priority
from tasks.django_tasks.registry import registered_task
from tasks.django_tasks.results import TaskCancelled
from tasks.messaging.publisher import publisher_flush
from tasks.models import DeadLetter, Delivery, Outbox, TaskRun
from tasks.queues import broker_priority
from tasks.transaction import event_cancel
from tests.support import django_jobs as jobs
from tests.support.processes import CeleryWorker, process_env
from tests.support.queues import purge_platform_queues
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_configured_default_backend_is_the_platforms():
    backend = task_backends["default"]
    assert isinstance(backend, PlatformTaskBackend) and default_task_backend.alias == "default"
    assert backend.supports_defer and backend.supports_get_result
    assert backend.supports_priority and backend.supports_async_task
    assert backend.queues == {"high", "default", "low"}
    assert list(backend.check()) == []


def test_an_enqueued_task_is_ready_with_its_arguments_and_no_attempt():
    for job in (jobs.noop_task, jobs.doubles_async):
        result = job.enqueue(1, two=3)
        assert result.status == TaskResultStatus.READY and not result.is_finished
        assert result.started_at is None and result.last_attempted_at is None and result.finished_at is None
        assert result.enqueued_at is not None
        with pytest.raises(ValueError, match="Task has not finished yet"):
            result.return_value  # noqa: B018
        assert result.task == job and result.args == [1] and result.kwargs == {"two": 3}
        assert result.attempts == 0 and result.backend == "default"
        assert default_task_backend.get_result(result.id) == result


def test_enqueue_records_the_run_its_event_and_its_delivery_on_the_tasks_queue_and_priority():
    result = jobs.urgent_on_low.enqueue("x")
    run = TaskRun.objects.get(result_id=result.id)
    assert (run.task_path, run.queue, run.priority, run.args) == (
        "tests.support.django_jobs.urgent_on_low",
        "low",
        50,
        ["x"],
    )
    assert Outbox.objects.filter(message_id=result.id).exists()
    delivery = Delivery.objects.get(message_id=result.id)
    assert (delivery.handler, delivery.queue, delivery.priority) == (RUN_HANDLER, "low", platform_priority(50))
    assert "args" not in delivery.payload["data"], "the arguments stay in the database"


def test_django_priorities_map_onto_the_platforms_in_order():
    assert [platform_priority(p) for p in (-100, -50, 0, 50, 100)] == [0, 2, 4, 6, 9]
    assert platform_priority(-1000) == 0 and platform_priority(1000) == 9
    # A higher Django priority is served first on either broker.
    for url in ("redis://h/0", "amqp://h//"):
        low, high = (broker_priority(platform_priority(p), broker_url=url) for p in (-100, 100))
        assert (high > low) == url.startswith("amqp")


def test_an_enqueue_in_a_rolled_back_transaction_leaves_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        result = jobs.noop_task.enqueue()
        raise RuntimeError("rolled back")
    assert not TaskRun.objects.exists() and not Outbox.objects.exists() and not Delivery.objects.exists()
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(result.id)


def test_unknown_and_malformed_result_ids_do_not_exist():
    for result_id in (str(uuid.uuid4()), "123", ""):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(result_id)


def test_a_result_whose_row_names_no_task_is_refused():
    result = jobs.noop_task.enqueue()
    TaskRun.objects.filter(result_id=result.id).update(task_path="subprocess.check_output")
    with pytest.raises(SuspiciousOperation, match="does not point to a Task"):
        default_task_backend.get_result(result.id)


def test_the_task_enqueued_signal_fires_with_the_result():
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append((sender, task_result.id, task_result.status))

    task_enqueued.connect(receiver)
    try:
        result = jobs.noop_task.enqueue()
    finally:
        task_enqueued.disconnect(receiver)
    assert seen == [(PlatformTaskBackend, result.id, TaskResultStatus.READY)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"queue_name": "nowhere"}, "Queue 'nowhere' is not valid for backend."),
        ({"priority": 101}, "priority must be a whole number between -100 and 100."),
        ({"priority": -101}, "priority must be a whole number between -100 and 100."),
        ({"run_after": timezone.now().replace(tzinfo=None)}, "run_after must be an aware datetime."),
    ],
)
def test_invalid_tasks_are_refused_with_a_reason(change, message):
    with pytest.raises(InvalidTask, match=message.replace(".", r"\.").replace("'", "'")):
        jobs.noop_task.using(**change)


def test_a_backend_restricted_to_some_queues_refuses_the_others_and_checks_its_setting():
    tasks_setting = {
        "default": {"BACKEND": "tasks.django_tasks.backend.PlatformTaskBackend", "QUEUES": ["high"]},
        "wrong": {"BACKEND": "tasks.django_tasks.backend.PlatformTaskBackend", "QUEUES": ["high", "urgent"]},
    }
    with override_settings(TASKS=tasks_setting):
        with pytest.raises(InvalidTask, match="Queue 'default' is not valid"):
            jobs.noop_task.using(queue_name="default")
        assert jobs.noop_task.using(queue_name="high").queue_name == "high"
        errors = list(task_backends["wrong"].check())
        assert [e.id for e in errors] == ["tasks.E001"] and "urgent" in errors[0].msg


def test_functions_that_cannot_be_tasks_are_refused():
    with pytest.raises(InvalidTask, match="module level"):
        task(lambda: None)

    def nested() -> None:
        return None

    with pytest.raises(InvalidTask, match="module level"):
        task(nested)
    with pytest.raises(InvalidTask, match="first argument of 'context'"):
        task(takes_context=True)(jobs.calculate_meaning_of_life.func)


def test_a_deferred_task_is_held_in_the_database_until_due():
    result = jobs.noop_task.using(run_after=timezone.now() + timedelta(hours=1)).enqueue()
    delivery = Delivery.objects.get(message_id=result.id)
    assert (delivery.status, delivery.sent_at, delivery.send_count) == (Delivery.Status.DELAYED, None, 0)
    assert result.status == TaskResultStatus.READY
    assert publisher_flush(10)
    assert Outbox.objects.get(message_id=result.id).sent_at is not None, "the event itself is published"


def test_a_cancelled_task_fails_with_a_cancel_error_and_never_starts():
    result = jobs.noop_task.using(run_after=timezone.now() + timedelta(hours=1)).enqueue()
    assert event_cancel(result.id) == 1
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.finished_at is not None
    assert [e.exception_class for e in result.errors] == [TaskCancelled]
    assert event_cancel(result.id) == 0, "cancelled once"


# Runs on a real worker -------------------------------------------------------------------------


@pytest.fixture
def jobs_worker(redis_client):
    purge_platform_queues()
    worker = CeleryWorker(extra_args=("--include", "tests.support.django_jobs"), env=process_env())
    with worker:
        yield worker


def finished(result, worker):
    def done() -> bool:
        result.refresh()
        return result.is_finished

    wait_until(done, timeout=30, message=lambda: worker.log()[-3000:])
    return result


@pytest.mark.slow
@pytest.mark.broker
def test_a_committed_enqueue_runs_once_with_its_result_and_timestamps(jobs_worker):
    with transaction.atomic():
        result = jobs.count_run.enqueue("committed")
        assert jobs.runs_of("committed") == 0, "not before the commit"
    finished(result, jobs_worker)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 1
    assert result.enqueued_at <= result.started_at <= result.last_attempted_at <= result.finished_at
    assert result.attempts == 1 and result.worker_ids[0].startswith("test-")
    assert result.errors == [] and jobs.runs_of("committed") == 1
    assert "state=RUNNING" in jobs_worker.log() and "state=SUCCESSFUL" in jobs_worker.log()


@pytest.mark.slow
@pytest.mark.broker
def test_failures_are_results_with_the_error_and_its_traceback_and_a_dead_letter(jobs_worker):
    cases = [
        (jobs.failing_task_value_error, ValueError, "ValueError: This task failed due to ValueError\n"),
        (jobs.complex_exception, ValueError, "ValueError: This task failed\n"),
        (jobs.returns_a_set, TypeError, "TypeError: Unsupported type: <class 'set'>\n"),
    ]
    results = [(job.enqueue(), exception, tail) for job, exception, tail in cases]
    for result, exception, tail in results:
        finished(result, jobs_worker)
        assert result.status == TaskResultStatus.FAILED and result.attempts == 1
        with pytest.raises(ValueError, match="Task failed"):
            result.return_value  # noqa: B018
        assert result.errors[0].exception_class is exception
        assert result.errors[0].traceback.endswith(tail), result.errors[0].traceback
        assert result.started_at <= result.finished_at
        dead = DeadLetter.objects.get(message_id=result.id)
        assert (dead.handler, dead.payload["data"]["task_path"]) == (RUN_HANDLER, result.task.module_path)


@pytest.mark.slow
@pytest.mark.broker
def test_a_transient_error_is_retried_by_the_platform_and_each_attempt_is_recorded(jobs_worker):
    result = finished(jobs.fails_once_then_succeeds.enqueue("retried"), jobs_worker)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == "second time lucky"
    assert result.attempts == 2 and len(result.worker_ids) == 2
    assert [e.exception_class_path for e in result.errors] == ["tasks.reliability.platform_task.TransientError"]


@pytest.mark.slow
@pytest.mark.broker
def test_context_async_functions_and_priorities_run(jobs_worker):
    with_context = jobs.reports_context.enqueue("context")
    doubled = jobs.doubles_async.enqueue(21)
    urgent = jobs.urgent_on_low.enqueue("low-queue")
    assert finished(with_context, jobs_worker).return_value == {"attempt": 1, "result_id": with_context.id}
    assert finished(doubled, jobs_worker).return_value == 42
    assert finished(urgent, jobs_worker).status == TaskResultStatus.SUCCESSFUL


def test_a_task_of_another_class_is_registered_when_enqueued_so_workers_can_find_it():
    plain = Task(func=jobs.plain_function)
    assert registered_task("tests.support.django_jobs.plain_function") is None
    plain.enqueue()
    assert registered_task("tests.support.django_jobs.plain_function") is plain
