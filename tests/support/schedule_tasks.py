"""Test-only tasks for schedule tests; workers load them with ``--include tests.support.schedule_tasks``."""

from __future__ import annotations

import time

from celery import shared_task

ECHO = "tests.schedules.echo"
SLOW = "tests.schedules.slow"


@shared_task(name=ECHO)
def echo(**kwargs: object) -> dict:
    """Return the keyword arguments the schedule gave, so a test sees which version of it ran."""
    return kwargs


@shared_task(name=SLOW)
def slow(seconds: float = 2.5) -> float:
    """Take longer than its schedule's interval."""
    time.sleep(seconds)
    return seconds
