"""Unique and debounced handlers for the tests of ``tasks.messaging.unique_deliveries``; each run is
recorded in the ledger, so a test counts runs across processes. Tests subscribe them with
``subscribed()``; workers load ``tests.support.unique_worker``, which subscribes them for good."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction

from tasks.bus import Broker
from tasks.messages import Message
from tasks.transaction import register_event
from tests.support.ledger.models import Effect
from tests.support.subscribed import subscribed_by


@dataclass(frozen=True)
class ReindexRequested(Message):
    component_id: int
    note: str = ""


@dataclass(frozen=True)
class ProfileEdited(Message):
    author_id: int
    revision: int


def reindex(event: ReindexRequested) -> None:
    Effect.objects.create(key=f"reindex:{event.component_id}:{event.note}")


def notify_followers(event: ProfileEdited) -> None:
    Effect.objects.create(key=f"notify:{event.author_id}:{event.revision}")


REINDEX_HANDLER = f"{__name__}.reindex"
NOTIFY_HANDLER = f"{__name__}.notify_followers"
DEBOUNCE_SECONDS = 2

OPTIONS = {
    reindex: {"unique": lambda e: f"reindex:{e.component_id}", "unique_for": timedelta(minutes=5)},
    notify_followers: {
        "unique": lambda e: f"profile:{e.author_id}",
        "unique_for": timedelta(seconds=DEBOUNCE_SECONDS),
        "debounce": True,
    },
}


def subscribe(broker: Broker) -> None:
    """Subscribe both handlers, unique and debounced, on ``broker``."""
    broker.subscribe_async(ReindexRequested, reindex, **OPTIONS[reindex])
    broker.subscribe_async(ProfileEdited, notify_followers, **OPTIONS[notify_followers])


def subscribed() -> contextlib.AbstractContextManager:
    """The handlers subscribed on the default broker inside the block, as a test needs them."""
    return subscribed_by(subscribe)


def request_reindex_concurrently(*, component_id: int, requests: int) -> None:
    """``requests`` threads register a ``ReindexRequested`` of one component at the same moment,
    each in its own transaction and connection."""
    barrier = threading.Barrier(requests)

    def request(n: int) -> None:
        try:
            barrier.wait()
            with transaction.atomic():
                register_event(ReindexRequested(component_id=component_id, note=str(n)))
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(n,)) for n in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
