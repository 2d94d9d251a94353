"""``TaskEnqueued``: the event an ``enqueue`` registers, and how its fields map to the platform.

The event goes through the outbox like any other, so an enqueue inside a transaction is sent
after the commit (and never on rollback), and the relay sends it if the broker was down. Its
``message_id`` is the id of the task's result (``TaskResult.id``). It names the task and where it
runs; the arguments stay in the task's ``TaskRun`` row, which the worker reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.django_tasks.compat import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY
from tasks.messages import Message
from tasks.queues import PRIORITY_MAX

# The stable name in outbox rows, deliveries and dead letters: it outlives a move of this module.
TASK_ENQUEUED = "tasks.django_task_enqueued"


@dataclass(frozen=True)
class TaskEnqueued(Message):
    """A Django task to run once: which one (its module path), on which queue, how urgently."""

    message_name = TASK_ENQUEUED

    task_path: str
    queue_name: str
    priority: int

    def describe(self) -> str:
        return f"Django task {self.task_path}"

    def delivery_queue(self) -> str:
        return self.queue_name

    def delivery_priority(self) -> int:
        return platform_priority(self.priority)


def platform_priority(priority: int) -> int:
    """Django's priority (``TASK_MIN_PRIORITY``..``TASK_MAX_PRIORITY``, higher first) as the
    platform's (0..``PRIORITY_MAX``, higher first), in equal steps: -100 is 0, 0 is 4, 100 is 9.
    Out-of-range values are clamped."""
    clamped = max(TASK_MIN_PRIORITY, min(TASK_MAX_PRIORITY, int(priority)))
    return (clamped - TASK_MIN_PRIORITY) * PRIORITY_MAX // (TASK_MAX_PRIORITY - TASK_MIN_PRIORITY)


# The path of the handler that runs them (``tasks.django_tasks.runner.task_run``), as its Delivery
# rows record it; the runner checks it is its own when it subscribes.
RUN_HANDLER = "tasks.django_tasks.runner.task_run"
