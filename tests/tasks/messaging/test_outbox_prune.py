"""Pruning sent outbox rows: only rows sent before the retention window go."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.messaging.outbox_prune import outbox_prune_sent
from tasks.models import Outbox
from tasks.tasks import prune_sent_outbox

pytestmark = pytest.mark.django_db


def outbox_row(*, sent_days_ago: float | None) -> Outbox:
    sent_at = None if sent_days_ago is None else timezone.now() - timedelta(days=sent_days_ago)
    return Outbox.objects.create(message_id=uuid.uuid4(), message_type="test.Event", payload={}, sent_at=sent_at)


def test_prune_deletes_rows_sent_before_the_retention_and_keeps_the_rest(settings):
    settings.OUTBOX_RETENTION_DAYS = 7
    old = [outbox_row(sent_days_ago=8) for _ in range(5)]
    recent = outbox_row(sent_days_ago=1)
    unsent = outbox_row(sent_days_ago=None)

    assert outbox_prune_sent(batch_size=2) == len(old)

    assert set(Outbox.objects.values_list("pk", flat=True)) == {recent.pk, unsent.pk}


def test_the_job_runs_without_arguments_on_an_empty_outbox_and_reports_what_it_deleted():
    assert prune_sent_outbox() == {"deleted": 0}
    outbox_row(sent_days_ago=30)
    assert prune_sent_outbox() == {"deleted": 1}
