"""Paused queues: which queues workers must not consume now.

A pause is a row (``QueuePause``), so it survives worker, broker and database restarts and a
worker that starts while a queue is paused never consumes it. Workers read the set every
``QUEUE_PAUSE_POLL_SECONDS`` (``tasks.reliability.paused_queues``); nothing on the broker changes,
so a paused queue's messages wait there, none lost, and run once it is resumed.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction

from tasks.models import QueuePause
from tasks.queues import validate_queue


def queue_pause(*, queue: str, by: str = "", reason: str = "") -> bool:
    """Pause ``queue`` (one of the platform's); False if it was paused already."""
    validate_queue(queue)
    try:
        with transaction.atomic():
            QueuePause.objects.create(queue=queue, paused_by=by[:150], reason=reason[:200])
    except IntegrityError:
        return False
    return True


def queue_resume(*, queue: str) -> bool:
    """Resume ``queue``; False if it was not paused."""
    return QueuePause.objects.filter(queue=queue).delete()[0] > 0


def paused_queues() -> set[str]:
    """The queues paused now, read from the database."""
    return set(QueuePause.objects.values_list("queue", flat=True))
