"""Model lifecycle signals that are the natural source of an event.

A component deleted anywhere (the admin, a shell, a cascade from its author) changes its
author's reputation; no service call sees every one of those deletions, the signal does.
"""

from django.db.models.signals import post_delete
from django.dispatch import receiver

from marketplace.events import ComponentDeleted
from marketplace.models import Author, Component
from tasks.transaction import register_event


@receiver(post_delete, sender=Component, dispatch_uid="marketplace.component_deleted")
def component_deleted(sender, instance: Component, **kwargs) -> None:
    # With the author itself gone (a cascade), there is no reputation left to update.
    if Author.objects.filter(pk=instance.author_id).exists():
        register_event(ComponentDeleted(component_id=instance.pk, author_id=instance.author_id))
