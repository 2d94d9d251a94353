"""Database connections in worker processes live as long as ``CONN_MAX_AGE``, as in the web.

Celery's Django fixup closes every connection before and after each task, so each task opened
a new PostgreSQL connection (a backend process forked per task: a third of a no-op task's time).
With ``CELERY_DB_REUSE_MAX`` set the fixup closes them every N tasks only, and these handlers
give tasks what Django gives requests: a connection older than ``CONN_MAX_AGE``, or one that
failed, is closed, and ``CONN_HEALTH_CHECKS`` checks a reused one before its first query.
"""

from __future__ import annotations

from typing import Any

from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections


def close_old_task_connections(**kwargs: Any) -> None:
    """Close connections that are too old or unusable, around each task (not eager ones)."""
    task = kwargs.get("task") or kwargs.get("sender")
    if getattr(getattr(task, "request", None), "is_eager", False):
        return  # an eager task runs inside its caller's request or transaction
    close_old_connections()


def connect() -> None:
    """Manage worker connections around each task; called from ``TasksConfig.ready()``."""
    task_prerun.connect(close_old_task_connections, dispatch_uid="tasks.reliability.worker_connections.prerun")
    task_postrun.connect(close_old_task_connections, dispatch_uid="tasks.reliability.worker_connections.postrun")
