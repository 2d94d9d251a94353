"""factory_boy factories for marketplace data, and the component sources tests upload."""

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from marketplace import services
from marketplace.models import ApiToken, Author, Component, Download, Notification, Rating

VALID_SOURCE = """---
name: {name}
version: 1.0.0
description: A component for tests.
tags: [test]
---
print("hello")
"""
# A valid upload whose metadata tests check after processing.
FANCY_BUTTON_SOURCE = """---
name: Fancy Button
version: 2.1.0
description: A button that sparkles when pressed.
tags: [ui, button]
---
export const Button = () => null;
"""
# Front matter without the required version and description: processing rejects it.
INVALID_SOURCE = "---\nname: Broken\n---\nx"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw-for-tests")


class AuthorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Author

    user = factory.SubFactory(UserFactory)
    display_name = factory.LazyAttribute(lambda a: a.user.username.title())


class ComponentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Component

    author = factory.SubFactory(AuthorFactory)
    name = factory.Sequence(lambda n: f"Component {n}")
    slug = factory.Sequence(lambda n: f"component-{n}")
    source = factory.LazyAttribute(lambda c: VALID_SOURCE.format(name=c.name))


class PublishedComponentFactory(ComponentFactory):
    """A component as ``component_process_upload`` leaves a valid upload: published, with metadata."""

    status = Component.Status.PUBLISHED
    version = "1.0.0"
    description = "A component for tests."
    metadata = factory.LazyAttribute(
        lambda c: {"name": c.name, "version": c.version, "description": c.description, "tags": ["test"]}
    )


class RatingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Rating

    component = factory.SubFactory(ComponentFactory)
    user = factory.SubFactory(UserFactory)
    score = 4


class DownloadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Download

    component = factory.SubFactory(ComponentFactory)
    user = factory.SubFactory(UserFactory)


class ApiTokenFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApiToken

    user = factory.SubFactory(UserFactory)
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=30))
    key_hash = factory.Sequence(lambda n: f"{n:064x}")
    key_prefix = factory.Sequence(lambda n: f"{n:08x}")


class NotificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Notification

    user = factory.SubFactory(UserFactory)
    subject = factory.Sequence(lambda n: f"Notification {n}")
    body = "Something happened."
    idempotency_key = factory.Sequence(lambda n: f"test-{n}")


def issue_key(user, **kwargs) -> str:
    """A fresh API key of ``user`` (through the service, as the admin and the command do)."""
    _, key = services.api_token_issue(user=user, **kwargs)
    return key
