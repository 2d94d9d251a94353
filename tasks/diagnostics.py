"""Diagnostic tasks: prove a worker runs tasks and stores results, and serve as a raw baseline."""

import socket

from celery import shared_task
from django.utils import timezone


@shared_task(name="tasks.ping")
def ping() -> dict:
    """Answer from a worker: its host name and time, stored in the task results."""
    return {"pong": True, "hostname": socket.gethostname(), "at": timezone.now().isoformat()}


@shared_task(name="tasks.noop", ignore_result=True)
def noop() -> None:
    """Do nothing: the raw-Celery baseline of the benchmarks."""
