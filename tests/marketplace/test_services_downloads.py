"""Services of downloads: the recorded download with its ComponentDownloaded event, and the
download counter refreshed from the rows."""

import pytest

from marketplace import services
from marketplace.errors import NotFound
from marketplace.events import (
    ComponentDownloaded,
)
from marketplace.models import Component, Download
from tests.marketplace.factories import (
    ComponentFactory,
    DownloadFactory,
    PublishedComponentFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("null_broker")]


@pytest.mark.parametrize("anonymous", [False, True], ids=["user", "anonymous"])
def test_download_records_a_row_and_registers_component_downloaded(committed, anonymous, published_facts):
    component = PublishedComponentFactory()
    user = None if anonymous else UserFactory()

    with committed():
        download = services.component_download(component=component, user=user)

    assert Download.objects.get() == download
    assert download.user_id == (None if anonymous else user.pk)
    assert published_facts() == [
        (ComponentDownloaded, {"component_id": component.pk, "user_id": None if anonymous else user.pk})
    ]


@pytest.mark.parametrize("status", [Component.Status.PENDING, Component.Status.REJECTED])
def test_download_is_refused_when_component_is_not_published(null_broker, committed, status):
    component = ComponentFactory(status=status)

    with committed(), pytest.raises(NotFound):
        services.component_download(component=component, user=UserFactory())

    assert not Download.objects.exists()
    assert null_broker.published == []


def test_download_count_refresh_counts_the_rows_of_the_component():
    component, other = PublishedComponentFactory(download_count=99), PublishedComponentFactory()
    DownloadFactory.create_batch(3, component=component)
    DownloadFactory(component=component, user=None)
    DownloadFactory(component=other)

    count = services.component_download_count_refresh(component_id=component.pk)

    assert count == 4
    assert Component.objects.get(pk=component.pk).download_count == 4
    assert Component.objects.get(pk=other.pk).download_count == 0


def test_download_count_refresh_gives_zero_when_there_are_no_downloads():
    component = PublishedComponentFactory(download_count=5)

    assert services.component_download_count_refresh(component_id=component.pk) == 0
    assert Component.objects.get(pk=component.pk).download_count == 0
