"""Opening, filling and closing batches."""

from __future__ import annotations

import pytest
from django.db import transaction

from tasks.batches import BatchClosed, batch_close, batch_members, batch_open
from tasks.models import Batch, Delivery
from tasks.transaction import register_event
from tests.support import django_jobs as jobs
from tests.support.deliveries import ItemStored, async_handler
from tests.support.subscribed import subscribed_async

pytestmark = pytest.mark.django_db(transaction=True)


def test_jobs_and_event_deliveries_recorded_inside_the_block_join_the_batch_and_others_do_not():
    with subscribed_async(ItemStored, [async_handler]), transaction.atomic():
        batch = batch_open(name="reindex", on_complete=jobs.batch_finished)
        with batch_members(batch):
            jobs.noop_task.enqueue()
            register_event(ItemStored(item_id=1))
        outside = jobs.noop_task.enqueue()
        batch = batch_close(batch=batch)
    assert (batch.status, batch.total, batch.on_complete) == (
        Batch.Status.CLOSED,
        2,
        "tests.support.django_jobs.batch_finished",
    )
    assert Delivery.objects.filter(batch=batch).count() == 2
    assert Delivery.objects.get(message_id=outside.id).batch is None


def test_a_rolled_back_batch_leaves_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        batch = batch_open(name="gone")
        with batch_members(batch):
            jobs.noop_task.enqueue()
        raise RuntimeError
    assert not Batch.objects.exists() and not Delivery.objects.exists()


def test_a_closed_batch_takes_no_members_and_closes_once():
    batch = batch_close(batch=batch_open(name="done"))
    with pytest.raises(BatchClosed), batch_members(batch):
        pytest.fail("entered the block of a closed batch")
    with pytest.raises(BatchClosed):
        batch_close(batch=batch)
