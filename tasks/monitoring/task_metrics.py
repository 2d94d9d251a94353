"""Task outcome and duration metrics, recorded in the worker processes from Celery signals.

Workers are prefork pools: each child records into its own files under
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, chosen by that environment
variable at import time), and ``/metrics`` in the web process merges the files. The Procfile and
``bin/run.py`` set the variable for the worker only. Without it (web, tests) the metrics live
in this process's memory, as usual.

The directory is emptied when a worker starts (files of a previous run would count twice), and
a child that exits is marked dead so its live gauges go; its counters stay, as they should.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_success,
    worker_init,
    worker_process_shutdown,
    worker_shutdown,
)
from prometheus_client import Counter, Histogram, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

TASKS_SUCCEEDED = Counter("platform_tasks_succeeded", "Tasks that finished successfully.", ["task"])
TASKS_FAILED = Counter("platform_tasks_failed", "Tasks that raised (after their last retry).", ["task"])
TASKS_RETRIED = Counter("platform_tasks_retried", "Task retries scheduled.", ["task"])
TASK_DURATION = Histogram(
    "platform_task_duration_seconds",
    "Wall time of one task run, whatever its outcome.",
    ["task"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

# task_id -> monotonic start, per process (a prefork child runs one task at a time).
_started: dict[str, float] = {}


def _task_name(sender: Any) -> str:
    return getattr(sender, "name", None) or str(sender)


def _on_prerun(task_id: str | None = None, **kwargs: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()


def _on_postrun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    started = _started.pop(task_id, None) if task_id else None
    if started is not None:
        TASK_DURATION.labels(task=_task_name(task)).observe(time.monotonic() - started)


def _on_success(sender: Any = None, **kwargs: Any) -> None:
    TASKS_SUCCEEDED.labels(task=_task_name(sender)).inc()


def _on_failure(sender: Any = None, **kwargs: Any) -> None:
    TASKS_FAILED.labels(task=_task_name(sender)).inc()


def _on_retry(sender: Any = None, **kwargs: Any) -> None:
    TASKS_RETRIED.labels(task=_task_name(sender)).inc()


def multiprocess_dir() -> Path | None:
    """The multiprocess directory of this process, or None when not in multiprocess mode."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def reset_multiprocess_dir(path: Path) -> None:
    """Create ``path`` and remove metric files a previous worker run left there."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def _on_worker_init(**kwargs: Any) -> None:
    path = multiprocess_dir()
    if path is not None:
        reset_multiprocess_dir(path)


def _on_process_exit(**kwargs: Any) -> None:
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(os.getpid(), str(path))


def connect() -> None:
    """Record task metrics from Celery's signals; called from ``TasksConfig.ready()``."""
    task_prerun.connect(_on_prerun, dispatch_uid="tasks.monitoring.task_metrics.prerun")
    task_postrun.connect(_on_postrun, dispatch_uid="tasks.monitoring.task_metrics.postrun")
    task_success.connect(_on_success, dispatch_uid="tasks.monitoring.task_metrics.success")
    task_failure.connect(_on_failure, dispatch_uid="tasks.monitoring.task_metrics.failure")
    task_retry.connect(_on_retry, dispatch_uid="tasks.monitoring.task_metrics.retry")
    worker_init.connect(_on_worker_init, dispatch_uid="tasks.monitoring.task_metrics.worker_init")
    worker_process_shutdown.connect(_on_process_exit, dispatch_uid="tasks.monitoring.task_metrics.child_exit")
    worker_shutdown.connect(_on_process_exit, dispatch_uid="tasks.monitoring.task_metrics.worker_exit")
