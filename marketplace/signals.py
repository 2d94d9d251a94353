"""Model lifecycle signals that are the natural source of an event.

A component deleted anywhere (the admin, a shell, a queryset delete) changes its author's
reputation; no service call sees every one of those deletions, the signal does.
:func:`connect` wires the receivers; ``MarketplaceConfig.ready()`` calls it.
"""

from typing import Any

from django.db.models import QuerySet
from django.db.models.signals import post_delete

from marketplace.events import ComponentDeleted
from marketplace.models import Component
from tasks.transaction import register_event


def _deletion_started_at_a_component(origin: object) -> bool:
    if isinstance(origin, QuerySet):
        return origin.model is Component
    return isinstance(origin, Component)


def component_deleted(sender: type[Component], instance: Component, origin: object = None, **kwargs: Any) -> None:
    """Register ComponentDeleted for a component deleted on its own, not by a cascade."""
    # A cascade from a deleted author or user leaves no reputation to update: Django deletes
    # the components before the author, so only the origin of the deletion tells them apart.
    if _deletion_started_at_a_component(origin):
        register_event(ComponentDeleted(component_id=instance.pk, author_id=instance.author_id))


def connect() -> None:
    """Connect the receivers (idempotent: the dispatch_uid keeps a second call from doubling them)."""
    post_delete.connect(component_deleted, sender=Component, dispatch_uid="marketplace.component_deleted")
