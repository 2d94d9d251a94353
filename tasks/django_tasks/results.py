"""Reading a Django task's ``TaskResult`` from the platform's records.

The status is its Delivery row's (the one record every platform job has, which retries, dead
letters, requeue and cancel change); the ``TaskRun`` row adds what only Django's API asks for:
timestamps, worker ids, errors and the return value.
"""

from __future__ import annotations

import uuid

from django.core.exceptions import SuspiciousOperation
from django.utils.module_loading import import_string

from tasks.django_tasks.compat import Task, TaskError, TaskResult, TaskResultDoesNotExist, TaskResultStatus
from tasks.django_tasks.message import RUN_HANDLER, TASK_ENQUEUED
from tasks.django_tasks.registry import registered_task
from tasks.models import Delivery, TaskRun

STATUS_OF_DELIVERY = {
    Delivery.Status.DELAYED: TaskResultStatus.READY,
    Delivery.Status.PENDING: TaskResultStatus.READY,
    Delivery.Status.UNPLANNED: TaskResultStatus.READY,
    Delivery.Status.RUNNING: TaskResultStatus.RUNNING,
    Delivery.Status.DONE: TaskResultStatus.SUCCESSFUL,
    Delivery.Status.DEAD: TaskResultStatus.FAILED,
    Delivery.Status.CANCELLED: TaskResultStatus.FAILED,
}


class TaskCancelled(Exception):
    """The error a cancelled task's result reports: it was withdrawn before it started."""


def task_run_deliveries(result_ids: list[uuid.UUID]) -> dict[uuid.UUID, Delivery]:
    """The Delivery row of each of these Django task runs, by result id."""
    rows = Delivery.objects.filter(message_id__in=result_ids, handler=RUN_HANDLER, message_type=TASK_ENQUEUED).only(
        "message_id", "status", "completed_at"
    )
    return {row.message_id: row for row in rows}


def task_run_status(delivery: Delivery | None) -> TaskResultStatus:
    """Django's status of a run whose delivery is ``delivery`` (READY before it is recorded)."""
    return TaskResultStatus.READY if delivery is None else STATUS_OF_DELIVERY[delivery.status]


def task_result_build(
    run: TaskRun, *, delivery: Delivery | None, status: TaskResultStatus | None = None, task: Task | None = None
) -> TaskResult:
    """The ``TaskResult`` of ``run``; ``status`` overrides the delivery's (a signal sent as a
    worker starts it, before its delivery says so), ``task`` the task found from the run's path
    (the caller's own, at enqueue)."""
    errors = [TaskError(exception_class_path=e["exception_class_path"], traceback=e["traceback"]) for e in run.errors]
    finished_at = run.finished_at
    if delivery is not None and delivery.status == Delivery.Status.CANCELLED:
        errors.append(TaskError(exception_class_path=f"{__name__}.TaskCancelled", traceback="cancelled before it ran"))
        finished_at = delivery.completed_at
    result = TaskResult(
        task=task or _task_for(run),
        id=str(run.result_id),
        status=status or task_run_status(delivery),
        enqueued_at=run.enqueued_at,
        started_at=run.started_at,
        finished_at=finished_at,
        last_attempted_at=run.last_attempted_at,
        args=run.args,
        kwargs=run.kwargs,
        backend=run.backend,
        errors=errors,
        worker_ids=list(run.worker_ids),
    )
    object.__setattr__(result, "_return_value", run.return_value)
    return result


def task_result_get(result_id: str) -> TaskResult:
    """The result with this id; ``TaskResultDoesNotExist`` for an unknown or malformed id."""
    try:
        key = uuid.UUID(str(result_id))
    except ValueError:
        raise TaskResultDoesNotExist(result_id) from None
    run = TaskRun.objects.filter(result_id=key).first()
    if run is None:
        raise TaskResultDoesNotExist(result_id)
    return task_result_build(run, delivery=task_run_deliveries([key]).get(key))


def _task_for(run: TaskRun) -> Task:
    """The task ``run`` names: registered in this process, or imported by the path its own
    enqueue wrote (never a path from the broker), for a process that never imported its module."""
    found = registered_task(run.task_path)
    if found is None:
        try:
            found = import_string(run.task_path)
        except ImportError:
            found = None
    if not isinstance(found, Task):
        raise SuspiciousOperation(f"Task {run.result_id} does not point to a Task ({run.task_path})")
    if (found.queue_name, found.priority, found.run_after, found.backend) == (
        run.queue,
        run.priority,
        run.run_after,
        run.backend,
    ):
        return found  # as decorated: no variant to build (and validate) again
    return found.using(queue_name=run.queue, priority=run.priority, run_after=run.run_after, backend=run.backend)
