"""The admin's batches list: each batch with its progress bar."""

import pytest
from django.urls import reverse

from tasks.batches import batch_close, batch_members, batch_open
from tasks.models import Delivery
from tests.support import django_jobs as jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_list_shows_each_batch_with_done_failed_and_pending_of_its_members(admin_client_logged_in):
    batch = batch_open(name="nightly reindex")
    with batch_members(batch):
        for _ in range(4):
            jobs.noop_task.enqueue()
    batch_close(batch=batch)
    rows = list(Delivery.objects.filter(batch=batch).order_by("pk"))
    Delivery.objects.filter(pk=rows[0].pk).update(status=Delivery.Status.DONE)
    Delivery.objects.filter(pk=rows[1].pk).update(status=Delivery.Status.DEAD)
    page = admin_client_logged_in.get(reverse("admin:tasks_batch_changelist")).content.decode()
    assert "nightly reindex" in page
    assert "<progress value='2' max='4'" in page and "1 done, 1 failed, 2 pending of 4" in page
    detail = admin_client_logged_in.get(reverse("admin:tasks_batch_change", args=[batch.pk])).content.decode()
    assert "1 done, 1 failed, 2 pending of 4" in detail


def test_the_cancel_action_cancels_a_batchs_unfinished_members(admin_client_logged_in):
    batch = batch_open(name="to cancel")
    with batch_members(batch):
        for _ in range(3):
            jobs.noop_task.enqueue()
    batch_close(batch=batch)
    first = Delivery.objects.filter(batch=batch).order_by("pk").first()
    Delivery.objects.filter(pk=first.pk).update(status=Delivery.Status.DONE)
    response = admin_client_logged_in.post(
        reverse("admin:tasks_batch_changelist"),
        {"action": "cancel_members", "_selected_action": [batch.pk]},
        follow=True,
    )
    assert "Cancelled 2 member(s)" in response.content.decode()
    statuses = sorted(Delivery.objects.filter(batch=batch).values_list("status", flat=True))
    assert statuses == [Delivery.Status.CANCELLED, Delivery.Status.CANCELLED, Delivery.Status.DONE]
