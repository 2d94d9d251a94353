"""``manage.py deliveries_cancel``: the admin's cancel action in a terminal."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tasks.batches import batch_close, batch_members, batch_open
from tasks.models import Delivery
from tests.support import django_jobs as jobs

pytestmark = pytest.mark.django_db(transaction=True)


def delayed_job() -> str:
    return jobs.noop_task.using(run_after=timezone.now() + timedelta(hours=1)).enqueue().id


def test_it_cancels_the_deliveries_of_the_given_messages_only(capsys):
    cancelled, kept = delayed_job(), delayed_job()
    call_command("deliveries_cancel", "--message-id", cancelled)
    assert "cancelled 1" in capsys.readouterr().out
    assert Delivery.objects.get(message_id=cancelled).status == Delivery.Status.CANCELLED
    assert Delivery.objects.get(message_id=kept).status == Delivery.Status.DELAYED


def test_all_with_a_status_cancels_every_match(capsys):
    for _ in range(3):
        delayed_job()
    call_command("deliveries_cancel", "--all", "--status", "delayed")
    assert "cancelled 3" in capsys.readouterr().out


def test_it_refuses_to_act_on_everything_by_default_and_says_so_for_a_bad_id():
    with pytest.raises(CommandError, match="--all"):
        call_command("deliveries_cancel")
    with pytest.raises(CommandError, match="bad message id"):
        call_command("deliveries_cancel", "--message-id", "not-a-uuid")


def test_a_batch_is_cancelled_by_its_id(capsys):
    batch = batch_open(name="b")
    with batch_members(batch):
        delayed_job()
        delayed_job()
    batch_close(batch=batch)
    delayed_job()  # not a member
    call_command("deliveries_cancel", "--batch", str(batch.pk))
    assert "cancelled 2" in capsys.readouterr().out
