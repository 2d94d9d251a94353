"""Helpers for tests that drive the Beat scheduler in process: its log lines and its lease row."""

from __future__ import annotations

from tasks.models import BEAT_LEASE_NAME, BeatHeartbeat

SCHEDULER_LOG = "tasks.scheduling"  # the scheduler and its lease, mirror and policies


def messages(caplog) -> list[str]:
    """What the scheduler (and its lease, mirror and policies) logged, in order."""
    return [record.getMessage() for record in caplog.records if record.name.startswith(SCHEDULER_LOG)]


def lock_row() -> BeatHeartbeat:
    """The Beat lease row (the lock and the heartbeat)."""
    return BeatHeartbeat.objects.get(name=BEAT_LEASE_NAME)
