"""Helpers for monitoring tests: messages with a chosen send time, metrics parsed back."""

from __future__ import annotations

import time

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
