"""Who handles which marketplace event: sync or async, on which queue. Wired from ``ready()``.

Handlers are thin: they read IDs from the event and call a service. Every async handler is
idempotent, and the platform runs it once per (message, handler).
"""

from marketplace import events, services
from marketplace.search import component_search_index_update
from tasks.bus import Broker
from tasks.queues import DEFAULT, HIGH_PRIORITY, LOW_PRIORITY


def process_component_upload(event: events.ComponentUploaded) -> None:
    """Parse the front matter, then publish or reject the component.

    A second delivery does nothing: the service leaves a component that is no longer pending alone.
    """
    services.component_process_upload(component_id=event.component_id)


def update_search_index(event: events.ComponentPublished | events.ComponentRejected) -> None:
    """Make a published component searchable, and take a rejected one out of the index."""
    component_search_index_update(component_id=event.component_id)


def recalculate_reputation(event: events.ComponentRated | events.ComponentDeleted) -> None:
    """Recompute the author's reputation from all their ratings (so a redelivery changes nothing)."""
    services.author_reputation_recalculate(author_id=event.author_id)


def update_download_stats(event: events.ComponentDownloaded) -> None:
    """Set the component's download counter from its Download rows (a recount, not an increment)."""
    services.component_download_count_refresh(component_id=event.component_id)


def send_notification(event: events.NotificationRequested) -> None:
    """Store and email the notification once per its idempotency key."""
    services.notification_send(
        user_id=event.user_id, subject=event.subject, body=event.body, idempotency_key=event.idempotency_key
    )


def notify_author_of_top_rating(event: events.ComponentRated) -> None:
    """Tell the author about a 5-star rating by someone else."""
    services.rating_notify_author(component_id=event.component_id, author_id=event.author_id, rater_id=event.user_id)


def is_top_rating(event: events.ComponentRated) -> bool:
    """The predicate of ``notify_author_of_top_rating``: only 5-star ratings are worth a message."""
    return event.score == 5


def register(broker: Broker) -> None:
    """Subscribe the marketplace's handlers (idempotent: a second call changes nothing)."""
    broker.subscribe_async(events.ComponentUploaded, process_component_upload, queue_name=HIGH_PRIORITY)
    broker.subscribe_async(events.ComponentPublished, update_search_index, queue_name=LOW_PRIORITY)
    broker.subscribe_async(events.ComponentRejected, update_search_index, queue_name=LOW_PRIORITY)
    broker.subscribe_async(events.ComponentDeleted, recalculate_reputation, queue_name=LOW_PRIORITY)
    broker.subscribe_async(events.ComponentRated, recalculate_reputation, queue_name=LOW_PRIORITY)
    broker.subscribe_async(
        events.ComponentRated, notify_author_of_top_rating, queue_name=DEFAULT, predicate=is_top_rating
    )
    broker.subscribe_async(events.ComponentDownloaded, update_download_stats, queue_name=LOW_PRIORITY)
    broker.subscribe_async(events.NotificationRequested, send_notification, queue_name=DEFAULT)
