"""``PlatformTaskBackend``: Django's task API on the platform.

```python
TASKS = {"default": {"BACKEND": "tasks.django_tasks.backend.PlatformTaskBackend"}}
```

``enqueue`` writes the task's ``TaskRun`` row and registers a ``TaskEnqueued`` event in one
transaction (the caller's, or its own): published after the commit, dropped on rollback, sent
by the relay if the broker was down, held in the database until ``run_after``. A worker runs it
through the platform's ``deliver`` task, so retries, dead letters, requeue, cancel and the
monitoring apply as to every platform job.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.core import checks
from django.db import transaction
from django.utils import timezone

from tasks.django_tasks.compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResult,
    TaskResultStatus,
    normalize_json,
    task_enqueued,
)
from tasks.django_tasks.message import TaskEnqueued
from tasks.django_tasks.registry import RegisteredTask, registered_task, task_register
from tasks.django_tasks.results import task_result_build, task_result_get
from tasks.models import TaskRun
from tasks.queues import QUEUES
from tasks.transaction import register_event


class PlatformTaskBackend(BaseTaskBackend):
    """Runs ``@task`` functions on the platform's Celery workers; results in its database.

    ``QUEUES`` may name some of the platform's queues (``high``, ``default``, ``low``); by default
    all three are allowed. ``priority`` becomes the broker priority within the queue.
    """

    task_class = RegisteredTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        if "QUEUES" not in params:
            self.queues = set(QUEUES)

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        if task.queue_name not in QUEUES:
            raise InvalidTask(f"Queue '{task.queue_name}' is not a platform queue ({', '.join(QUEUES)}).")

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Record the run and its event in one transaction; see the module docstring."""
        self.validate_task(task)
        if registered_task(task.module_path) is None:
            task_register(task)  # a Task built by another backend's class, moved here with using()
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        run = TaskRun(
            result_id=uuid.uuid4(),
            task_path=task.module_path,
            backend=self.alias,
            queue=task.queue_name,
            priority=task.priority,
            args=args,
            kwargs=kwargs,
            run_after=task.run_after,
            enqueued_at=timezone.now(),
        )
        event = TaskEnqueued(
            message_id=run.result_id, task_path=run.task_path, queue_name=run.queue, priority=run.priority
        )
        # No savepoint inside the caller's transaction (its rollback drops both); outside one this
        # is the transaction, and the event is published as it commits.
        with transaction.atomic(savepoint=False):
            run.save(force_insert=True)
            register_event(event, run_after=task.run_after)
        result = task_result_build(run, delivery=None, status=TaskResultStatus.READY, task=task)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The task's result as the platform's records have it now."""
        return task_result_get(result_id)

    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        unknown = sorted(self.queues - set(QUEUES))
        if unknown:
            yield checks.Error(
                f"TASKS[{self.alias!r}]['QUEUES'] names queues the platform does not have: {', '.join(unknown)}",
                hint=f"Use some of {', '.join(QUEUES)}.",
                id="tasks.E001",
            )
