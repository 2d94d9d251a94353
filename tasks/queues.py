"""Public API: queue names, routing and priorities; the platform has three queues, ``high``,
``default`` and ``low``.

Workers take from them in that order, strictly (Redis: kombu's ``queue_order_strategy``
"priority"; RabbitMQ delivers from the queues a worker consumes in turn, so ``high`` waits for a
few tasks at most). Within a queue a message's priority (0..``PRIORITY_MAX``, higher sooner)
decides: RabbitMQ queues are declared with ``x-max-priority``, Redis keeps one list per priority
step. ``broker_priority`` turns a platform priority into the value the broker in use expects.
"""

from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.utils import timezone

HIGH_PRIORITY = "high"
DEFAULT = "default"
LOW_PRIORITY = "low"

QUEUES = (HIGH_PRIORITY, DEFAULT, LOW_PRIORITY)

# Message priorities run 0..PRIORITY_MAX, higher first, as in AMQP.
PRIORITY_MAX = 9

__all__ = [
    "DEFAULT",
    "HIGH_PRIORITY",
    "LOW_PRIORITY",
    "PRIORITY_MAX",
    "QUEUES",
    "broker_priority",
    "queue_deadline",
    "route_task",
    "validate_queue",
]

# Tasks that are not ours and cannot declare a queue themselves.
TASK_QUEUES: dict[str, str] = {
    "celery.backend_cleanup": LOW_PRIORITY,
}


def route_task(name: str, args: Any, kwargs: Any, options: dict, task: Any = None, **kw: Any) -> dict | None:
    """Celery router: an explicit ``queue=`` wins, then the table above, then the default queue."""
    if options.get("queue"):
        return None
    if name in TASK_QUEUES:
        return {"queue": TASK_QUEUES[name]}
    return None


def validate_queue(queue_name: str) -> str:
    """Return ``queue_name`` if it is one of the platform's queues, else raise ValueError."""
    if queue_name not in QUEUES:
        raise ValueError(f"Unknown queue {queue_name!r}; use one of {', '.join(QUEUES)}.")
    return queue_name


def broker_priority(priority: int, *, broker_url: str | None = None) -> int:
    """The message priority to publish for platform ``priority`` (0..9, higher first) on the
    broker at ``broker_url`` (the app's by default).

    RabbitMQ takes it as it is. kombu's Redis transport serves its lowest priority step first
    (step 0 before 3, 6, 9), the reverse, so it is mirrored there. Out-of-range values are clamped.
    """
    clamped = max(0, min(PRIORITY_MAX, int(priority)))
    url = broker_url or current_app.conf.broker_url
    if url.split(":", 1)[0] in ("redis", "rediss", "sentinel"):
        return PRIORITY_MAX - clamped
    return clamped


def queue_deadline(queue: str, *, since: datetime | None = None) -> datetime | None:
    """When work on ``queue`` published (or, for a delivery, created) at ``since`` expires:
    ``QUEUE_EXPIRES`` seconds later; None when the queue sets no expiry."""
    seconds = settings.QUEUE_EXPIRES.get(queue)
    if not seconds:
        return None
    return (since or timezone.now()) + timedelta(seconds=seconds)
