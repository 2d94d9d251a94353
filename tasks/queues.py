"""Public API: queue names and routing; the platform has three queues, ``high``, ``default`` and ``low``."""

from typing import Any

HIGH_PRIORITY = "high"
DEFAULT = "default"
LOW_PRIORITY = "low"

QUEUES = (HIGH_PRIORITY, DEFAULT, LOW_PRIORITY)

__all__ = ["DEFAULT", "HIGH_PRIORITY", "LOW_PRIORITY", "QUEUES", "route_task", "validate_queue"]

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
