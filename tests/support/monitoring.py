"""Helpers for monitoring tests: messages with a chosen send time, metrics parsed back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from celery import current_app
from prometheus_client.parser import text_string_to_metric_families

from tasks.monitoring import publish_timestamps


def send_at(monkeypatch, seconds_ago: float, **options) -> None:
    """Publish a task (no worker consumes it) as if it had been sent ``seconds_ago``."""
    sent = time.time() - seconds_ago
    monkeypatch.setattr(publish_timestamps.time, "time", lambda: sent)
    current_app.send_task("tasks.ping", **options)
    monkeypatch.undo()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, for every sample of every family."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def record_in_another_process(directory: Path, code: str) -> None:
    """Run ``code`` (with ``prometheus_client`` imported as ``p``) in a process writing its metric
    files into ``directory``, as a worker, web or relay process would."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-c", f"import prometheus_client as p\n{code}"],
        check=True,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
    )


def record_last_start(directory: Path, queue: str, seconds_ago: float) -> None:
    """A worker process's record that it last started a task from ``queue`` ``seconds_ago``."""
    record_in_another_process(
        directory,
        "p.Gauge('platform_queue_last_task_started_timestamp_seconds', 'x', ['queue'], multiprocess_mode='max')"
        f".labels(queue={queue!r}).set({time.time() - seconds_ago})",
    )
