"""The relay's ``batches`` pass: a closed batch whose members have all finished is finished, and
its callback enqueued, exactly once.

Finished means done, dead-lettered or cancelled (a member waiting for a retry is not). Counts are
read from the members' Delivery rows, never incremented, so a worker killed mid-batch (its member
runs again) cannot count twice. The batch's status change and the callback's enqueue commit in one
transaction behind a conditional UPDATE: two relays, or a relay killed between the two, still
enqueue it once.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from django.utils.module_loading import import_string

from tasks.django_tasks.compat import Task
from tasks.django_tasks.registry import registered_task
from tasks.models import Batch, Delivery

logger = logging.getLogger(__name__)

FINISHED_OK = (Delivery.Status.DONE,)
FINISHED_FAILED = (Delivery.Status.DEAD, Delivery.Status.CANCELLED)


def batch_counts(batch_id: int) -> dict[str, int]:
    """A batch's members by outcome: ``done``, ``failed``, ``pending`` (everything unfinished)."""
    by_status = dict(
        Delivery.objects.filter(batch_id=batch_id).values_list("status").annotate(n=Count("pk")).order_by()
    )
    done = sum(by_status.get(s, 0) for s in FINISHED_OK)
    failed = sum(by_status.get(s, 0) for s in FINISHED_FAILED)
    return {"done": done, "failed": failed, "pending": sum(by_status.values()) - done - failed}


def batches_finish(*, limit: int = 100) -> int:
    """Finish the closed batches whose members have all finished (oldest first, at most
    ``limit``), enqueueing each one's callback; return how many finished."""
    finished = 0
    closed = Batch.objects.filter(status=Batch.Status.CLOSED).order_by("closed_at")
    for batch_id in closed.values_list("pk", flat=True)[:limit]:
        unfinished = Delivery.objects.filter(batch_id=batch_id).exclude(status__in=(*FINISHED_OK, *FINISHED_FAILED))
        if unfinished.exists():
            continue
        finished += _finish(batch_id)
    return finished


def _finish(batch_id: int) -> int:
    counts = batch_counts(batch_id)
    with transaction.atomic():
        won = Batch.objects.filter(pk=batch_id, status=Batch.Status.CLOSED).update(
            status=Batch.Status.FINISHED, done=counts["done"], failed=counts["failed"], finished_at=timezone.now()
        )
        if not won:
            return 0
        batch = Batch.objects.get(pk=batch_id)
        if batch.on_complete:
            result = _callback(batch.on_complete).enqueue(
                batch_id=batch.pk, name=batch.name, total=batch.total, done=batch.done, failed=batch.failed
            )
            Batch.objects.filter(pk=batch_id).update(callback_result_id=result.id)
    logger.info("batch %s finished: %d done, %d failed", batch_id, counts["done"], counts["failed"])
    return 1


def _callback(path: str) -> Task:
    """The completion task ``batch_open`` recorded: registered here, or imported by the path this
    platform wrote (a relay never imports the apps' task modules itself)."""
    found = registered_task(path) or import_string(path)
    if not isinstance(found, Task):
        raise TypeError(f"the completion callback {path} is not a Django task")
    return found
