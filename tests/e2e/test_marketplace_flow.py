"""The marketplace end to end through the bus, a real worker and the real broker."""

import pytest

from marketplace import services
from marketplace.models import Component, Notification
from marketplace.selectors import search_components
from tasks.models import Delivery, Outbox
from tests.marketplace.factories import FANCY_BUTTON_SOURCE, INVALID_SOURCE, AuthorFactory, UserFactory
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker]


def test_upload_is_published_indexed_and_notified_when_a_worker_runs(celery_worker_process):
    author = AuthorFactory()
    component = services.component_upload(author=author, name="Fancy Button", source=FANCY_BUTTON_SOURCE)

    wait_until(
        lambda: Component.objects.filter(pk=component.pk, indexed_at__isnull=False).exists(),
        message=lambda: celery_worker_process.log()[-3000:],
    )
    component.refresh_from_db()
    assert component.status == Component.Status.PUBLISHED
    assert component.version == "2.1.0"
    assert component.metadata["tags"] == ["ui", "button"]
    assert list(search_components("sparkles")) == [component]
    notification = wait_until(lambda: Notification.objects.filter(user=author.user).first())
    assert "published" in notification.subject
    wait_until(lambda: notification.__class__.objects.filter(pk=notification.pk, emailed_at__isnull=False).exists())
    assert not Outbox.objects.filter(sent_at__isnull=True).exists()
    wait_until(lambda: not Delivery.objects.exclude(status=Delivery.Status.DONE).exists())


def test_bad_front_matter_is_rejected_with_a_readable_reason(celery_worker_process):
    author = AuthorFactory()
    component = services.component_upload(author=author, name="Broken", source=INVALID_SOURCE)
    wait_until(lambda: Component.objects.get(pk=component.pk).status == Component.Status.REJECTED)
    component.refresh_from_db()
    assert component.rejection_reason == "Missing required front matter field(s): version, description."
    wait_until(lambda: Notification.objects.filter(user=author.user, subject__contains="rejected").exists())


def test_ratings_and_downloads_update_counters_and_reputation(celery_worker_process):
    author = AuthorFactory()
    component = services.component_upload(author=author, name="Fancy Button", source=FANCY_BUTTON_SOURCE)
    wait_until(lambda: Component.objects.get(pk=component.pk).status == Component.Status.PUBLISHED)
    component.refresh_from_db()
    raters = UserFactory.create_batch(3)
    for user, score in zip(raters, [5, 4, 3], strict=True):
        services.component_rate(component=component, user=user, score=score)
    for user in raters:
        services.component_download(component=component, user=user)

    wait_until(lambda: Component.objects.get(pk=component.pk).download_count == 3)
    author.refresh_from_db()
    wait_until(lambda: str(type(author).objects.get(pk=author.pk).reputation) == "4.00")
    # Only the 5-star rating notifies the author (the predicate sends nothing for the others).
    wait_until(lambda: Notification.objects.filter(subject__contains="5-star").count() == 1)
    assert Delivery.objects.filter(handler__endswith="notify_author_of_top_rating").count() == 1
