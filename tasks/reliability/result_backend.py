"""The result backend: django-celery-results' ``DatabaseBackend`` that waits out a database outage.

Celery's tracer writes a task's STARTED, SUCCESS and FAILURE results outside the task body. With
the plain backend, a write that fails because the database is down escapes the tracer as an
internal error, and the worker acknowledges the message with no result, no retry and no dead
letter: the task is lost. Here, a write made by a worker's run of a task waits for the database
(retries with backoff for ``TASKS_DATABASE_WAIT`` seconds) and, if it is still away, raises
``Reject(requeue=True)``: with ``acks_late`` the worker gives the message back to the queue, and
the task runs again when the database is there to record it. A task is never acknowledged
without its outcome recorded.

A RETRY result is the exception: when it is written the retry's message is already on the
broker, and giving the message back too would run the task twice; it is logged and left out,
and the retry records its own outcome when it runs.

Writes made outside a task run (the worker's main process, eager runs, the web) behave as in
django-celery-results: they must never block an event loop or a request.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery import current_task, states
from celery.exceptions import Reject
from django.conf import settings
from django.db import connection, transaction
from django.db.utils import InterfaceError, OperationalError
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long the first pause is, and the longest one, between tries (seconds).
FIRST_PAUSE = 0.5
LONGEST_PAUSE = 5.0


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (refused, dropped, closed connection)."""
    return isinstance(exc, OperationalError | InterfaceError)


def database_wait(operation: Callable[[], T], *, what: str) -> T:
    """Run ``operation``; while the database is unavailable, try again with jittered backoff for
    ``TASKS_DATABASE_WAIT`` seconds, then raise ``Reject(requeue=True)`` (the message goes back).

    Only for a worker's run of a task, outside any transaction: the broken connection is closed
    before each new try, which Django forbids inside ``atomic``.
    """
    deadline = time.monotonic() + settings.TASKS_DATABASE_WAIT
    pause = FIRST_PAUSE
    while True:
        try:
            return operation()
        except Exception as exc:
            if not database_unavailable(exc) or connection.in_atomic_block:
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning("database still unavailable; giving the task back to the queue (%s)", what)
                raise Reject(f"database unavailable: {what}", requeue=True) from exc
            logger.warning("database unavailable (%s): %s; trying again", what, exc)
            connection.close()  # the next try opens a new connection
            time.sleep(min(remaining, random.uniform(pause / 2, pause)))
            pause = min(pause * 2, LONGEST_PAUSE)


def running_task_id() -> str | None:
    """The id of the task this process is running for a worker (not eagerly), or None."""
    task = current_task._get_current_object()  # the proxy itself is never None
    if task is None:
        return None
    request = task.request
    if request.called_directly or request.is_eager:
        return None
    return request.id


class PlatformResultBackend(DatabaseBackend):
    """``DatabaseBackend`` whose writes from a task run wait for the database or give the task back."""

    def store_result(
        self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None, **kwargs: Any
    ) -> Any:
        def store() -> Any:
            return super(PlatformResultBackend, self).store_result(
                task_id, result, state, traceback=traceback, request=request, **kwargs
            )

        if running_task_id() != task_id:
            return store()
        if state == states.RETRY:
            try:
                with transaction.atomic():
                    # The retry is published before this is stored: a fast next attempt on another
                    # pool process may have finished already, and its result must stand.
                    finished = TaskResult.objects.select_for_update().filter(
                        task_id=task_id, status__in=states.READY_STATES
                    )
                    if list(finished.values_list("status", flat=True)):
                        return result
                    return store()
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                # The retry's message is on the broker already; it records its own outcome.
                logger.warning("database unavailable: RETRY of task %s not recorded: %s", task_id, exc)
                connection.close()
                return result
        return database_wait(store, what=f"{state} result of task {task_id}")
