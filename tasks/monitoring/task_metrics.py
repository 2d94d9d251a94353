"""Task event metrics under celery-exporter's names, recorded from Celery signals where they happen.

celery-exporter (danihodovic/celery-exporter) turns Celery's events into
``celery_task_{sent,received,started,succeeded,failed,rejected,revoked,retried}_total`` (labels
``name``, ``hostname``, ``queue_name``; ``failed`` adds ``exception``), ``celery_task_runtime``
(a histogram of successful runs, its default buckets) and ``celery_worker_tasks_active``. The
same names, labels and types are recorded here, so its Grafana dashboards and alert rules work
on the platform's ``/metrics`` without running the exporter. ``hostname`` is the host part of
the worker's node name (``celery@web-1`` -> ``web-1``), or the publishing host for ``sent``, as
the exporter has it: no ids, so the label sets stay bounded.

Workers are prefork pools: each child records into its own files under
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, chosen by that environment
variable at import time), and ``/metrics`` in the web process merges the files. The Procfile
gives each process kind a directory under ``PROMETHEUS_METRICS_DIR`` (the worker that directory
itself; web, relay and Beat, whose ``sent`` counts go there, a subdirectory each). Without the
variable (tests) the metrics live in this process's memory, as usual.

The worker empties its directory when it starts (files of a previous run would count twice),
and a child that exits is marked dead so its live gauges go; its counters stay, as they should.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from celery.signals import (
    after_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    task_received,
    task_rejected,
    task_retry,
    task_revoked,
    task_success,
    worker_init,
    worker_process_shutdown,
    worker_shutdown,
)
from celery.utils.nodenames import nodesplit
from prometheus_client import Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LABELS = ["name", "hostname", "queue_name"]
TASK_SENT = Counter("celery_task_sent", "Sent when a task message is published.", LABELS)
TASK_RECEIVED = Counter("celery_task_received", "Sent when the worker receives a task.", LABELS)
TASK_STARTED = Counter("celery_task_started", "Sent just before the worker executes the task.", LABELS)
TASK_SUCCEEDED = Counter("celery_task_succeeded", "Sent if the task executed successfully.", LABELS)
TASK_FAILED = Counter("celery_task_failed", "Sent if the execution of the task failed.", [*LABELS, "exception"])
TASK_REJECTED = Counter(
    "celery_task_rejected",
    "The task was rejected by the worker, possibly to be re-queued or moved to a dead letter queue.",
    LABELS,
)
TASK_REVOKED = Counter("celery_task_revoked", "Sent if the task has been revoked.", LABELS)
TASK_RETRIED = Counter("celery_task_retried", "Sent if the task failed, but will be retried in the future.", LABELS)
TASK_RUNTIME = Histogram("celery_task_runtime", "Histogram of task runtime measurements.", LABELS)
WORKER_TASKS_ACTIVE = Gauge(
    "celery_worker_tasks_active",
    "The number of tasks the worker is currently processing",
    ["hostname"],
    multiprocess_mode="livesum",
)

# Not an exporter metric: work whose deadline passed before it ran (each one a dead letter).
TASKS_EXPIRED = Counter(
    "platform_tasks_expired", "Tasks not run because they expired first (dead-lettered).", ["name", "queue"]
)

# Not an exporter metric: what the stalled-consumption check and alert compare a queue's
# waiting messages with. "max" over every process that wrote it, the dead included.
QUEUE_LAST_STARTED = Gauge(
    "platform_queue_last_task_started_timestamp_seconds",
    "When a worker process last started a task from the queue (Unix time).",
    ["queue"],
    multiprocess_mode="max",
)

# The publishing host, as celery-exporter labels ``sent`` (read once: publishing is a hot path).
_THIS_HOST = socket.gethostname()

# task_id -> monotonic start, per process (a prefork child runs one task at a time).
_started: dict[str, float] = {}


def host_of(node_name: str | None) -> str:
    """The host part of a Celery node name (``celery@web-1`` -> ``web-1``), as celery-exporter labels it."""
    return nodesplit(node_name or "")[1] or "unknown"


def _queue_of(delivery_info: dict | None) -> str:
    # The platform routes each queue by its own name, so the routing key is the queue.
    info = delivery_info or {}
    return str(info.get("routing_key") or info.get("exchange") or "celery")


def _labels(name: Any, request: Any) -> dict[str, str]:
    return {
        "name": str(name),
        "hostname": host_of(getattr(request, "hostname", None)),
        "queue_name": _queue_of(getattr(request, "delivery_info", None)),
    }


def _task_labels(task: Any) -> dict[str, str]:
    return _labels(getattr(task, "name", None) or task, getattr(task, "request", None))


def _on_published(
    sender: Any = None, routing_key: str | None = None, exchange: str | None = None, **kwargs: Any
) -> None:
    TASK_SENT.labels(name=str(sender), hostname=_THIS_HOST, queue_name=routing_key or exchange or "celery").inc()


# Label sets whose outcome counters this process has shown at zero (see _on_received).
_shown: set[tuple[str, ...]] = set()


def _on_received(request: Any = None, **kwargs: Any) -> None:
    labels = _labels(request.name, request)
    TASK_RECEIVED.labels(**labels).inc()
    key = tuple(labels.values())
    if key not in _shown:
        # As celery-exporter does: every outcome counter of a task exists, at 0, from its first
        # message on, so rate() and ratio queries see 0 rather than no data before a first failure.
        _shown.add(key)
        for counter in (TASK_STARTED, TASK_SUCCEEDED, TASK_RETRIED, TASK_REJECTED, TASK_REVOKED):
            counter.labels(**labels).inc(0)
        TASK_FAILED.labels(**labels, exception="").inc(0)


def _on_rejected(sender: Any = None, message: Any = None, **kwargs: Any) -> None:
    # Refused before it became a request (unknown task, undecodable body): the message is all there is.
    headers = getattr(message, "headers", None) or {}
    TASK_REJECTED.labels(
        name=str(headers.get("task") or "unknown"),
        hostname=host_of(getattr(sender, "hostname", None)),
        queue_name=_queue_of(getattr(message, "delivery_info", None)),
    ).inc()


def _on_revoked(sender: Any = None, request: Any = None, expired: bool = False, **kwargs: Any) -> None:
    labels = _labels(getattr(sender, "name", None) or sender, request)
    TASK_REVOKED.labels(**labels).inc()
    if expired:
        TASKS_EXPIRED.labels(name=labels["name"], queue=labels["queue_name"]).inc()


def _on_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    labels = _task_labels(task)
    TASK_STARTED.labels(**labels).inc()
    QUEUE_LAST_STARTED.labels(queue=labels["queue_name"]).set(time.time())
    WORKER_TASKS_ACTIVE.labels(hostname=labels["hostname"]).inc()
    if task_id:
        _started[task_id] = time.monotonic()


def _on_postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **kwargs: Any) -> None:
    labels = _task_labels(task)
    WORKER_TASKS_ACTIVE.labels(hostname=labels["hostname"]).dec()
    started = _started.pop(task_id, None) if task_id else None
    if started is not None and state == "SUCCESS":
        TASK_RUNTIME.labels(**labels).observe(time.monotonic() - started)


def _on_success(sender: Any = None, **kwargs: Any) -> None:
    TASK_SUCCEEDED.labels(**_task_labels(sender)).inc()


def _on_failure(sender: Any = None, exception: BaseException | None = None, **kwargs: Any) -> None:
    TASK_FAILED.labels(**_task_labels(sender), exception=type(exception).__name__ if exception else "").inc()


def _on_retry(sender: Any = None, **kwargs: Any) -> None:
    TASK_RETRIED.labels(**_task_labels(sender)).inc()


def multiprocess_dir() -> Path | None:
    """The multiprocess directory of this process, or None when not in multiprocess mode."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def reset_multiprocess_dir(path: Path) -> None:
    """Create ``path`` and remove metric files a previous worker run left there (not those below it)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


class ProcessMetricFiles(Collector):
    """The metric files of every process kind, merged: the worker's in ``root``, the others' below it.

    One merge over all files, not a ``MultiProcessCollector`` per directory: a metric family
    written by two process kinds (``celery_task_sent_total`` by web and relay) must come out once.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def collect(self) -> Iterable[Metric]:
        files = sorted(self.root.glob("*.db")) + sorted(self.root.glob("*/*.db"))
        return multiprocess.MultiProcessCollector.merge([str(f) for f in files], accumulate=True) if files else []


def last_task_started_by_queue(root: Path) -> dict[str, float]:
    """Queue -> Unix time a worker process writing under ``root`` last started a task from it."""
    return {
        sample.labels["queue"]: sample.value
        for family in ProcessMetricFiles(root).collect()
        if family.name == QUEUE_LAST_STARTED.describe()[0].name
        for sample in family.samples
    }


def _on_worker_init(**kwargs: Any) -> None:
    path = multiprocess_dir()
    if path is not None:
        reset_multiprocess_dir(path)


def _on_process_exit(**kwargs: Any) -> None:
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(os.getpid(), str(path))


def connect() -> None:
    """Record task metrics from Celery's signals in every process; called from ``TasksConfig.ready()``."""
    path = multiprocess_dir()
    if path is not None:
        # Before the first value is written: prometheus_client opens its files in the directory.
        path.mkdir(parents=True, exist_ok=True)
    after_task_publish.connect(_on_published, dispatch_uid="tasks.monitoring.task_metrics.published")
    task_received.connect(_on_received, dispatch_uid="tasks.monitoring.task_metrics.received")
    task_rejected.connect(_on_rejected, dispatch_uid="tasks.monitoring.task_metrics.rejected")
    task_revoked.connect(_on_revoked, dispatch_uid="tasks.monitoring.task_metrics.revoked")
    task_prerun.connect(_on_prerun, dispatch_uid="tasks.monitoring.task_metrics.prerun")
    task_postrun.connect(_on_postrun, dispatch_uid="tasks.monitoring.task_metrics.postrun")
    task_success.connect(_on_success, dispatch_uid="tasks.monitoring.task_metrics.success")
    task_failure.connect(_on_failure, dispatch_uid="tasks.monitoring.task_metrics.failure")
    task_retry.connect(_on_retry, dispatch_uid="tasks.monitoring.task_metrics.retry")
    worker_init.connect(_on_worker_init, dispatch_uid="tasks.monitoring.task_metrics.worker_init")
    worker_process_shutdown.connect(_on_process_exit, dispatch_uid="tasks.monitoring.task_metrics.child_exit")
    worker_shutdown.connect(_on_process_exit, dispatch_uid="tasks.monitoring.task_metrics.worker_exit")
