"""The relay's batches pass: a batch finishes once, when every member has, with exact counts."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from tasks.batches import batch_close, batch_members, batch_open
from tasks.batches.completion import batch_counts, batches_finish
from tasks.models import Batch, Delivery, TaskRun
from tests.support import django_jobs as jobs

pytestmark = pytest.mark.django_db(transaction=True)


def closed_batch(members: int) -> Batch:
    batch = batch_open(name="n", on_complete=jobs.batch_finished)
    with batch_members(batch):
        for _ in range(members):
            jobs.noop_task.enqueue()
    return batch_close(batch=batch)


def set_statuses(batch: Batch, *statuses: str) -> None:
    for row, status in zip(Delivery.objects.filter(batch=batch).order_by("pk"), statuses, strict=True):
        Delivery.objects.filter(pk=row.pk).update(status=status)


def callback_runs(batch: Batch) -> list[TaskRun]:
    return list(TaskRun.objects.filter(task_path="tests.support.django_jobs.batch_finished", kwargs__batch_id=batch.pk))


def test_a_batch_with_unfinished_members_stays_closed():
    batch = closed_batch(3)
    set_statuses(batch, Delivery.Status.DONE, Delivery.Status.DEAD, Delivery.Status.PENDING)
    assert batches_finish() == 0
    assert batch_counts(batch.pk) == {"done": 1, "failed": 1, "pending": 1}


def test_it_finishes_once_with_the_counts_and_enqueues_the_callback_once():
    batch = closed_batch(4)
    set_statuses(batch, Delivery.Status.DONE, Delivery.Status.DONE, Delivery.Status.DEAD, Delivery.Status.CANCELLED)
    assert batches_finish() == 1
    assert batches_finish() == 0
    batch.refresh_from_db()
    assert (batch.status, batch.total, batch.done, batch.failed) == (Batch.Status.FINISHED, 4, 2, 2)
    [callback] = callback_runs(batch)
    assert callback.kwargs == {"batch_id": batch.pk, "name": "n", "total": 4, "done": 2, "failed": 2}
    assert str(batch.callback_result_id) == str(callback.result_id)


def test_an_open_batch_never_finishes_and_an_empty_closed_one_does():
    open_batch = batch_open(name="open")
    empty = closed_batch(0)
    assert batches_finish() == 1
    assert Batch.objects.get(pk=open_batch.pk).status == Batch.Status.OPEN
    assert Batch.objects.get(pk=empty.pk).status == Batch.Status.FINISHED


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
def test_two_relays_finishing_at_once_enqueue_one_callback():
    batch = closed_batch(2)
    set_statuses(batch, Delivery.Status.DONE, Delivery.Status.DONE)
    barrier, finished = threading.Barrier(4), []

    def relay() -> None:
        try:
            barrier.wait()
            finished.append(batches_finish())
        finally:
            connection.close()

    threads = [threading.Thread(target=relay) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(finished) == [0, 0, 0, 1]
    assert len(callback_runs(batch)) == 1
