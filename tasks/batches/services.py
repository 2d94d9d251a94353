"""Opening, filling and closing batches (``tasks.batches``); their completion is in ``completion``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import transaction
from django.utils import timezone

from tasks.django_tasks.compat import Task
from tasks.messaging.batch_context import batch_context
from tasks.models import Batch, Delivery


class BatchClosed(RuntimeError):
    """Members may be added to an open batch only."""


def batch_open(*, name: str, on_complete: Task | None = None) -> Batch:
    """A new open batch; ``on_complete`` (a Django task) runs once when every member has finished."""
    return Batch.objects.create(name=name, on_complete=on_complete.module_path if on_complete else "")


@contextlib.contextmanager
def batch_members(batch: Batch) -> Iterator[Batch]:
    """Every delivery recorded inside the block (each ``enqueue`` of a Django task, each
    ``register_event``'s async deliveries) joins ``batch``; ``BatchClosed`` if it is not open."""
    if not Batch.objects.filter(pk=batch.pk, status=Batch.Status.OPEN).exists():
        raise BatchClosed(f"batch {batch.pk} is not open")
    with batch_context(batch.pk):
        yield batch


def batch_close(*, batch: Batch) -> Batch:
    """Close ``batch``: no more members; its total is counted now. It finishes (and its callback
    is enqueued) once every member has; a batch closed empty finishes at the relay's next pass."""
    with transaction.atomic():
        total = Delivery.objects.filter(batch=batch).count()
        closed = Batch.objects.filter(pk=batch.pk, status=Batch.Status.OPEN).update(
            status=Batch.Status.CLOSED, total=total, closed_at=timezone.now()
        )
    if not closed:
        raise BatchClosed(f"batch {batch.pk} is not open")
    batch.refresh_from_db()
    return batch
