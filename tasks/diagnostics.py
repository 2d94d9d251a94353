"""Diagnostic tasks: prove a worker runs tasks and stores results, or do nothing on schedule."""

import socket

from celery import shared_task
from django.utils import timezone


@shared_task(name="tasks.ping")
def ping() -> dict:
    """Answer from a worker: its host name and time, stored in the task results."""
    return {"pong": True, "hostname": socket.gethostname(), "at": timezone.now().isoformat()}


@shared_task(name="tasks.noop", ignore_result=True)
def noop() -> None:
    """Do nothing and store no result: a harmless job for trying out schedules."""
