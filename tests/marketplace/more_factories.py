"""Factories added beside tests/marketplace/factories.py (which stays as it is)."""

import factory

from marketplace.models import Component, Notification
from tests.marketplace.factories import ComponentFactory, UserFactory


class PublishedComponentFactory(ComponentFactory):
    """A component as ``component_process_upload`` leaves a valid upload: published, with metadata."""

    status = Component.Status.PUBLISHED
    version = "1.0.0"
    description = "A component for tests."
    metadata = factory.LazyAttribute(
        lambda c: {"name": c.name, "version": c.version, "description": c.description, "tags": ["test"]}
    )


class NotificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Notification

    user = factory.SubFactory(UserFactory)
    subject = factory.Sequence(lambda n: f"Notification {n}")
    body = "Something happened."
    idempotency_key = factory.Sequence(lambda n: f"test-{n}")
