"""Test-only tasks for schedule tests; workers load them with ``--include tests.support.schedule_tasks``."""

from __future__ import annotations

import os
import time

from celery import shared_task

from tasks.scheduling.runs import RUN_HEADER
from tests.support.ledger.models import Effect

ECHO = "tests.schedules.echo"
SLOW = "tests.schedules.slow"
RECORD_RUN = "tests.schedules.record_run"
RUN_KEY_PREFIX = "scheduled-run:"


@shared_task(name=ECHO)
def echo(**kwargs: object) -> dict:
    """Return the keyword arguments the schedule gave, so a test sees which version of it ran."""
    return kwargs


@shared_task(name=SLOW)
def slow(seconds: float = 2.5) -> float:
    """Take longer than its schedule's interval."""
    time.sleep(seconds)
    return seconds


def scheduled_run_key(run_id: object) -> str:
    """The ledger key of one execution of the scheduled run ``run_id``."""
    return f"{RUN_KEY_PREFIX}{run_id}"


@shared_task(name=RECORD_RUN, bind=True, ignore_result=True)
def record_run(self) -> None:
    """Add one ledger row per execution, keyed by the scheduled run it executes (its message
    header), so a test counts executions per due time: none is lost, none twice."""
    run_id = getattr(self.request, RUN_HEADER, None) or (self.request.headers or {}).get(RUN_HEADER)
    Effect.objects.create(key=scheduled_run_key(run_id), worker_pid=os.getpid())
