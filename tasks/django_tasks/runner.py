"""Running Django tasks on the platform's workers.

``task_run`` is the async handler of ``TaskEnqueued``: the platform's ``deliver`` task runs it
once per enqueue, inside the transaction that marks the delivery done, so the return value is
stored exactly when the run counts as done. It runs the task the ``TaskRun`` row names, with the
row's arguments; the message only says which row. The function comes from the registry of
decorated tasks (``tasks.django_tasks.registry``), never from an import of a path: a worker that
does not know the task yet (a rolling deploy) waits for one that does, as for any handler.

Each attempt's start and each failure are recorded outside the handler's transaction (which a
failure rolls back), from Celery's ``task_prerun``, ``task_retry`` and ``task_failure`` signals of
the ``deliver`` task; Django's ``task_started`` and ``task_finished`` signals fire from there.
"""

from __future__ import annotations

import traceback
import uuid
from typing import Any

from celery import signals
from celery.exceptions import Retry
from django.db import transaction
from django.db.models import Exists, Func, JSONField, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from tasks.bus import get_message_broker
from tasks.django_tasks.compat import (
    TaskContext,
    TaskResultStatus,
    normalize_json,
    task_backends,
    task_finished,
    task_started,
)
from tasks.django_tasks.message import RUN_HANDLER, TASK_ENQUEUED, TaskEnqueued
from tasks.django_tasks.registry import registered_task
from tasks.django_tasks.results import task_result_build
from tasks.messaging.deliveries import DELIVER_TASK
from tasks.messaging.round_trips import execute_with_async_commit, update_sql
from tasks.messaging.subscriptions import handler_path
from tasks.models import Delivery, TaskRun
from tasks.queues import DEFAULT
from tasks.reliability.deliver import RefusedDelivery, UnknownHandler, UnknownToThisWorker

UNFINISHED = (Delivery.Status.PENDING, Delivery.Status.RUNNING)


# The row of the run this worker process is starting, read as its attempt was recorded.
_started: dict[uuid.UUID, TaskRun] = {}


def task_run(message: TaskEnqueued) -> None:
    """Run the Django task of ``message`` once and store its return value (see module docstring)."""
    # The row this process read as the attempt started (one query fewer), else the database's.
    run = _started.pop(message.message_id, None) or TaskRun.objects.filter(result_id=message.message_id).first()
    if run is None:
        raise RefusedDelivery(f"no task run {message.message_id}: not an enqueue of this platform")
    task = registered_task(run.task_path)
    if task is None:
        raise UnknownHandler(f"task {run.task_path} is not registered in this worker (is its module imported?)")
    if task.takes_context:
        context = TaskContext(task_result=task_result_build(run, delivery=None, status=TaskResultStatus.RUNNING))
        value = task.call(context, *run.args, **run.kwargs)
    else:
        value = task.call(*run.args, **run.kwargs)
    run.return_value = normalize_json(value)
    run.finished_at = timezone.now()
    run.save(update_fields=["return_value", "finished_at"])
    finished = task_result_build(run, delivery=None, status=TaskResultStatus.SUCCESSFUL)
    transaction.on_commit(lambda: task_finished.send(backend_sender(run.backend), task_result=finished))


def task_run_attempt_started(*, result_id: uuid.UUID, worker_id: str) -> None:
    """Record an attempt's start (one statement, its own commit) and send ``task_started``;
    nothing for a copy of a run that is done or cancelled."""
    now = timezone.now()
    startable = Delivery.objects.filter(message_id=result_id, handler=RUN_HANDLER, status__in=UNFINISHED)
    record = update_sql(
        TaskRun.objects.filter(Exists(startable), result_id=result_id),
        {
            "started_at": Coalesce("started_at", Value(now)),
            "last_attempted_at": now,
            "finished_at": None,  # a requeued run is unfinished again
            "worker_ids": JSONAppend("worker_ids", Value(worker_id)),
        },
    )
    # Committed without waiting for the disk, as the delivery's start count is: a record lost in
    # a database crash only misses one attempt's start.
    recorded = execute_with_async_commit(f"{record[0]} RETURNING 1", record[1])
    if not recorded:
        return
    run = TaskRun.objects.get(result_id=result_id)
    _started.clear()  # at most the run this process is about to start
    _started[result_id] = run
    if task_started.has_listeners():
        task_started.send(
            backend_sender(run.backend),
            task_result=task_result_build(run, delivery=None, status=TaskResultStatus.RUNNING),
        )


class JSONAppend(Func):
    """``array + [value]`` for a JSON array column, as one SQL expression (no read first);
    PostgreSQL and SQLite, the databases the platform runs on."""

    output_field = JSONField()

    def _parts(self, compiler: Any) -> tuple[str, str, list]:
        (array_sql, array_params), (value_sql, value_params) = (
            compiler.compile(e) for e in self.get_source_expressions()
        )
        return array_sql, value_sql, [*array_params, *value_params]

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        array_sql, value_sql, params = self._parts(compiler)
        return f"({array_sql} || jsonb_build_array(({value_sql})::text))", params

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        array_sql, value_sql, params = self._parts(compiler)
        return f"json_insert({array_sql}, '$[#]', {value_sql})", params


def task_run_attempt_failed(*, result_id: uuid.UUID, exc: BaseException, tb: str, final: bool) -> None:
    """Record a failed attempt's error; when ``final`` (dead-lettered), the run's end, and send
    ``task_finished``."""
    with transaction.atomic():
        run = TaskRun.objects.select_for_update().filter(result_id=result_id).first()
        if run is None:
            return
        error = {"exception_class_path": f"{type(exc).__module__}.{type(exc).__qualname__}", "traceback": tb}
        run.errors = [*run.errors, error]
        if final:
            run.finished_at = timezone.now()
        run.save(update_fields=["errors", "finished_at"])
    if final:
        failed = task_result_build(run, delivery=None, status=TaskResultStatus.FAILED)
        task_finished.send(backend_sender(run.backend), task_result=failed)


def backend_sender(alias: str) -> type:
    """The sender of Django's task signals for a run of backend ``alias``: its class, as Django's
    backends send them."""
    return type(task_backends[alias])


def _result_id(task: Any, args: Any, kwargs: Any) -> uuid.UUID | None:
    """The result id of a ``deliver`` run of ``task_run``; None for any other task run. The
    arguments come from the broker: anything unexpected is simply not a Django task run."""
    if getattr(task, "name", None) != DELIVER_TASK:
        return None
    args, kwargs = tuple(args or ()), dict(kwargs or {})
    payload, handler = (*args, None, None)[:2]
    payload, handler = kwargs.get("payload", payload), kwargs.get("handler", handler)
    if handler != RUN_HANDLER or not isinstance(payload, dict) or payload.get("type") != TASK_ENQUEUED:
        return None
    data = payload.get("data")
    try:
        return uuid.UUID(str(data.get("message_id"))) if isinstance(data, dict) else None
    except ValueError:
        return None


def _on_prerun(sender: Any = None, task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    result_id = _result_id(task, args, kwargs)
    if result_id is not None:
        task_run_attempt_started(result_id=result_id, worker_id=task.request.hostname or "")


def _on_retry(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    result_id = _result_id(sender, getattr(request, "args", None), getattr(request, "kwargs", None))
    # Celery's autoretry reports its Retry; the task's own error is inside it.
    error = getattr(reason, "exc", None) if isinstance(reason, Retry) else reason
    # A worker that does not know the task yet (a deploy) made no attempt: nothing to record.
    if result_id is not None and isinstance(error, BaseException) and not isinstance(error, UnknownToThisWorker):
        task_run_attempt_failed(result_id=result_id, exc=error, tb=_traceback(error, None), final=False)


def _on_failure(
    sender: Any = None, exception: Any = None, args: Any = None, kwargs: Any = None, einfo: Any = None, **_: Any
) -> None:
    result_id = _result_id(sender, args, kwargs)
    if result_id is not None and isinstance(exception, BaseException):
        task_run_attempt_failed(result_id=result_id, exc=exception, tb=_traceback(exception, einfo), final=True)


def _traceback(exc: BaseException, einfo: Any) -> str:
    text = getattr(einfo, "traceback", None)
    return text if isinstance(text, str) and text else "".join(traceback.format_exception(exc))


def connect() -> None:
    """Subscribe the runner to ``TaskEnqueued`` (each enqueue's own queue; ``default`` is only
    the fallback) and connect the attempt records to the ``deliver`` task's signals."""
    if handler_path(task_run) != RUN_HANDLER:
        raise RuntimeError(f"RUN_HANDLER is {RUN_HANDLER}, but the runner is {handler_path(task_run)}")
    broker = get_message_broker()
    if not any(s.handler is task_run for s in broker.subscriptions()):
        broker.subscribe_async(TaskEnqueued, task_run, queue_name=DEFAULT)
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="django_tasks_prerun")
    signals.task_retry.connect(_on_retry, weak=False, dispatch_uid="django_tasks_retry")
    signals.task_failure.connect(_on_failure, weak=False, dispatch_uid="django_tasks_failure")
