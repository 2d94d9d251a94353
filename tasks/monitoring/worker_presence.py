"""Which worker hosts answer and which queues they consume, from one pair of broadcasts.

celery-exporter reports ``celery_worker_up`` per host, and per queue the workers and pool
processes consuming it (``celery_active_worker_count``, ``celery_active_process_count``), from
``inspect().stats()`` and ``inspect().active_queues()``; so does ``/metrics`` here, at scrape time.

A host that stops answering is reported as down (0), not dropped, for ``WORKER_FORGET_AFTER``
seconds, as the exporter does, so a "worker down" alert has a series to fire on. The hosts seen
are remembered by this web process: each of several web processes remembers the hosts its own
scrapes saw, which Prometheus, scraping one address, sees as one of them at a time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from celery import current_app
from django.conf import settings

from tasks.monitoring.deadline import call_concurrently
from tasks.monitoring.task_metrics import host_of

_seen_lock = threading.Lock()
_last_seen: dict[str, float] = {}  # host -> monotonic time it last answered


@dataclass(frozen=True)
class WorkerPresence:
    """Per host 1 (answered) or 0 (answered within the forget window, not now); per queue counts."""

    up: dict[str, int]
    workers_per_queue: dict[str, int]
    processes_per_queue: dict[str, int]


def _count_by_queue(stats: dict, active_queues: dict) -> tuple[dict[str, int], dict[str, int]]:
    workers: Counter[str] = Counter()
    processes: Counter[str] = Counter()
    for node, queues in active_queues.items():
        pool = (stats.get(node) or {}).get("pool") or {}
        for queue in queues or ():
            name = str(queue.get("name", "")) if isinstance(queue, dict) else ""
            if name:
                workers[name] += 1
                processes[name] += len(pool.get("processes") or ())
    return dict(workers), dict(processes)


def worker_presence(*, timeout: float | None = None) -> WorkerPresence:
    """Broadcast ``stats`` and ``active_queues`` at once and wait ``timeout`` seconds for replies."""
    wait = settings.HEALTH_WORKER_PING_TIMEOUT if timeout is None else timeout
    replies = call_concurrently(
        {
            "stats": lambda: current_app.control.inspect(timeout=wait).stats() or {},
            "queues": lambda: current_app.control.inspect(timeout=wait).active_queues() or {},
        },
        timeout=wait + 1,
    )
    stats = replies["stats"].value if replies["stats"].ok else {}
    active_queues = replies["queues"].value if replies["queues"].ok else {}
    answered = {host_of(node) for node in (*stats, *active_queues)}
    workers, processes = _count_by_queue(stats, active_queues)
    return WorkerPresence(up=_remember(answered), workers_per_queue=workers, processes_per_queue=processes)


def _remember(answered: set[str]) -> dict[str, int]:
    now = time.monotonic()
    with _seen_lock:
        for host in answered:
            _last_seen[host] = now
        for host, seen in list(_last_seen.items()):
            if now - seen > settings.WORKER_FORGET_AFTER:
                del _last_seen[host]
        return {host: int(host in answered) for host in sorted(_last_seen)}


def forget_workers() -> None:
    """Forget every host seen (for tests)."""
    with _seen_lock:
        _last_seen.clear()
