"""``PlatformTask``: the base of every platform and marketplace task.

- Retries transient errors only (``TransientError`` and ``settings.TASKS_RETRY_FOR``), with
  exponential backoff, full jitter and a cap, up to ``settings.TASKS_MAX_RETRIES``.
- A task that fails for good (retries exhausted, a permanent error, its soft time limit)
  becomes a ``DeadLetter`` that an operator can requeue; with the database down, it waits for it
  or goes back to the queue (``tasks.reliability.result_backend``), so the failure is recorded.
- A retry that cannot be published gives the message back to the queue instead of dropping it.
- Logs carry the task id (and, for deliveries, message id and handler).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from django.conf import settings
from django.utils.module_loading import import_string

from tasks.reliability.dead_letters import FailedDelivery, dead_letter_record
from tasks.reliability.log_context import log_context
from tasks.reliability.result_backend import database_wait

# Longest pause (seconds) before a retry that could not be published goes back to the queue.
UNPUBLISHED_RETRY_PAUSE = 2.0

logger = logging.getLogger(__name__)


class TransientError(Exception):
    """Worth retrying: a timeout, a lock, a service that is briefly down."""


class PermanentError(Exception):
    """Retrying cannot help: bad input, an unknown message type or handler."""


class PoisonMessage(PermanentError):
    """The task started too many times without finishing: each time its worker died."""


def retryable_exceptions() -> tuple[type[BaseException], ...]:
    """``TransientError`` plus the classes named in ``settings.TASKS_RETRY_FOR``."""
    return (TransientError, *(import_string(path) for path in settings.TASKS_RETRY_FOR))


def failure_reason(task: Task, exc: BaseException) -> str:
    """Why a task ended up dead: shown and filtered on in the admin."""
    if isinstance(exc, PoisonMessage):
        return "poison"
    if isinstance(exc, SoftTimeLimitExceeded):
        return "time limit"
    if isinstance(exc, task.autoretry_for):
        return "retries exhausted"
    return "failed"


class PlatformTask(Task):
    """Declared retries, dead letter on final failure, structured logs."""

    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = retryable_exceptions()
    retry_backoff = 1
    retry_backoff_max = settings.TASKS_RETRY_BACKOFF_MAX
    retry_jitter = True
    max_retries = settings.TASKS_MAX_RETRIES

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with log_context(task_id=self.request.id):
            return super().__call__(*args, **kwargs)

    def on_retry(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        logger.warning("task %s retrying after %s: %s", self.name, type(exc).__name__, exc, extra={"task_id": task_id})

    def failed_delivery(self, args: tuple, kwargs: dict) -> FailedDelivery | None:
        """The delivery a run with these arguments was, for a task that runs one; None here.

        The task knows its own arguments, so the dead letter never decodes another task's.
        """
        return None

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """``Task.retry``, but a retry whose message cannot be published gives the message back.

        Celery turns a failed retry publish (a broker blip) into ``Reject(requeue=False)``: the
        message is dropped, and ``on_failure`` never runs, so no dead letter either. Here the
        message goes back to the queue (acks_late) and runs again, after a short pause so a
        broker that keeps refusing publishes is not hammered.
        """
        try:
            return super().retry(*args, **kwargs)
        except Reject as exc:
            if exc.requeue or self.request.called_directly or self.request.is_eager:
                raise
            logger.warning(
                "task %s: its retry could not be published (%s); giving it back to the queue",
                self.name,
                exc.reason,
                extra={"task_id": self.request.id},
            )
            countdown = kwargs.get("countdown") or 0
            time.sleep(random.uniform(0, min(countdown, UNPUBLISHED_RETRY_PAUSE)))
            raise Reject(exc.reason, requeue=True) from exc

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        reason = failure_reason(self, exc)
        logger.error("task %s failed for good (%s): %s", self.name, reason, exc, extra={"task_id": task_id})

        def record() -> None:
            dead_letter_record(
                task_name=self.name,
                task_id=task_id,
                queue=(self.request.delivery_info or {}).get("routing_key") or "",
                args=list(args),
                kwargs=dict(kwargs),
                exc=exc,
                traceback=str(einfo) if einfo else "",
                attempts=self.request.retries + 1,
                reason=reason,
                delivery=self.failed_delivery(args, kwargs),
            )

        try:
            if self.request.called_directly or self.request.is_eager:
                record()
            else:
                # In a worker: a database outage must not lose the dead letter. It waits for the
                # database, or raises Reject and the task runs again to record its failure.
                database_wait(record, what=f"dead letter of task {task_id}")
        except Reject:
            raise
        except Exception:
            # The worker must go on; the failure itself is in the task results and the log.
            logger.exception("could not record dead letter for task %s", task_id)
