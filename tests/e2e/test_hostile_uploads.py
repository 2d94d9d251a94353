"""Hostile uploads through a real worker and the real broker: every bad document ends as a
rejected component with its reason and one notice to its author. None is left pending, none
becomes a dead letter (lost = 0), and none is processed or announced twice (applied twice = 0)."""

import pytest

from marketplace import services
from marketplace.models import Component, Notification
from tasks.models import DeadLetter, Delivery
from tests.marketplace.factories import AuthorFactory
from tests.marketplace.test_services_hostile_uploads import HOSTILE
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker]


def test_hostile_uploads_are_rejected_with_reasons_and_none_is_dead_lettered(celery_worker_process):
    author = AuthorFactory()
    uploaded = {
        label: services.component_upload(author=author, name=f"Hostile {label}", source=source).pk
        for label, (source, _) in HOSTILE.items()
    }

    def settled() -> bool:
        return not Component.objects.filter(pk__in=uploaded.values(), status=Component.Status.PENDING).exists()

    wait_until(settled, timeout=120, message=lambda: celery_worker_process.log()[-3000:])
    # Each rejection's notice is sent after its commit: wait for them, then for every delivery.
    wait_until(lambda: Notification.objects.filter(user=author.user).count() >= len(HOSTILE), timeout=120)
    wait_until(
        lambda: not Delivery.objects.exclude(status=Delivery.Status.DONE).exists(),
        timeout=120,
        message=lambda: celery_worker_process.log()[-3000:],
    )

    stored = {c.pk: c for c in Component.objects.filter(pk__in=uploaded.values())}
    lost = [label for label, pk in uploaded.items() if stored[pk].status != Component.Status.REJECTED]
    assert lost == []
    for label, (_, reason) in HOSTILE.items():
        assert stored[uploaded[label]].rejection_reason.endswith(reason), label
        assert stored[uploaded[label]].metadata == {}
    assert not DeadLetter.objects.exists()
    notices = list(Notification.objects.filter(user=author.user).values_list("subject", flat=True))
    applied_twice = len(notices) - len(set(notices))
    assert applied_twice == 0
    assert sorted(notices) == sorted(f"Hostile {label} was rejected" for label in HOSTILE)
