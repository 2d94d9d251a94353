"""Work that expires before it runs: a dead letter with reason "expired", on Redis and RabbitMQ alike.

A task expires at the time its message carries (Celery's ``expires``): a job's own
``expires=``, its queue's ``QUEUE_EXPIRES`` (counted from the publish, or for a delivery from
its creation, so a re-send after an outage keeps the first deadline), or a periodic run's next
due time (``tasks.scheduling``). The worker that receives an expired message does not run it:
Celery revokes it, and here that becomes a dead letter an operator can requeue (the delivery
turns dead, so the sweeper leaves it), plus ``platform_tasks_expired_total``.

Celery also sets an AMQP per-message TTL (``expiration``) from ``expires``: RabbitMQ would then
drop the message by itself, unseen by anyone. That property is removed before publishing, so
on RabbitMQ as on Redis the worker sees the message and records it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import before_task_publish, task_revoked

from tasks.queues import queue_deadline
from tasks.reliability.dead_letters import dead_letter_record
from tasks.reliability.result_backend import database_wait

logger = logging.getLogger(__name__)

EXPIRED = "expired"


class WorkExpired(Exception):
    """The work's deadline passed before a worker started it."""


def _on_before_publish(
    headers: dict | None = None, properties: dict | None = None, routing_key: str | None = None, **kwargs: Any
) -> None:
    if properties is not None:
        properties.pop("expiration", None)
    if headers is not None and headers.get("expires") is None and routing_key:
        deadline = queue_deadline(routing_key)
        if deadline is not None:
            headers["expires"] = deadline.isoformat()


def _on_revoked(sender: Any = None, request: Any = None, expired: bool = False, **kwargs: Any) -> None:
    if not expired or sender is None:
        return
    args, task_kwargs = list(getattr(request, "args", None) or []), dict(getattr(request, "kwargs", None) or {})
    failed = getattr(sender, "failed_delivery", None)
    deadline = getattr(request, "expires", None)
    task_id = getattr(request, "id", "") or ""

    def record() -> None:
        dead_letter_record(
            task_name=sender.name,
            task_id=task_id,
            queue=(getattr(request, "delivery_info", None) or {}).get("routing_key") or "",
            args=args,
            kwargs=task_kwargs,
            exc=WorkExpired(f"not started before its deadline {deadline}"),
            traceback="",
            attempts=1,
            reason=EXPIRED,
            delivery=failed(tuple(args), task_kwargs) if failed else None,
        )

    logger.warning("task %s expired before it ran (deadline %s): dead-lettered", sender.name, deadline)
    try:
        database_wait(record, what=f"dead letter of expired task {task_id}")
    except Exception:
        # The message is acknowledged already (Celery's doing): what is left is the log line.
        logger.exception("could not record the expired task %s %s args=%r", sender.name, task_id, args)


def connect() -> None:
    """Keep expired messages for the worker and dead-letter them; called from ``TasksConfig.ready()``."""
    before_task_publish.connect(_on_before_publish, dispatch_uid="tasks.reliability.expiry.publish")
    task_revoked.connect(_on_revoked, dispatch_uid="tasks.reliability.expiry.revoked")
