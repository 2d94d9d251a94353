"""A message, an async handler, and Delivery and Outbox rows as the relay left them, for the sweeper
and relay tests.

The handler is importable by path (``HANDLER``), as a worker imports handlers; it never runs in these
tests, only its deliveries are sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.utils import timezone

from tasks.messages import Message
from tasks.models import Delivery, Outbox

MODULE = __name__
HANDLER = f"{MODULE}.async_handler"


@dataclass(frozen=True)
class ItemStored(Message):
    item_id: int


def async_handler(message: ItemStored) -> None:
    """An async handler; it never runs here (no worker), only its delivery is sent."""


def recorded_delivery(
    message: Message, *, handler: str, queue: str = "default", sent_ago: timedelta = timedelta(0), **fields: Any
) -> Delivery:
    """A Delivery of ``message`` to ``handler`` as a commit records it: sent once ``sent_ago`` ago under its
    own task id; ``fields`` set the rest (``status``, ``unfinished_starts``...)."""
    row = {"task_id": str(uuid.uuid4()), "send_count": 1, "sent_at": timezone.now() - sent_ago, **fields}
    return Delivery.objects.create(
        message_id=message.message_id,
        handler=handler,
        message_type=message.message_name,
        payload=message.to_json(),
        queue=queue,
        **row,
    )


def delivery_row(
    *,
    status: str = Delivery.Status.PENDING,
    sent_ago: timedelta = timedelta(minutes=10),
    queue: str = "low",
    item_id: int = 1,
) -> Delivery:
    """A Delivery of ``ItemStored`` to ``async_handler``, sent once ``sent_ago`` ago and left in ``status``."""
    return recorded_delivery(
        ItemStored(item_id=item_id), handler=HANDLER, queue=queue, sent_ago=sent_ago, status=status
    )


def unsent_row(message: Message, *, age: timedelta = timedelta(minutes=1)) -> Outbox:
    """An outbox row ``age`` old, as register_event leaves it when the commit hook could not send."""
    row = Outbox.objects.create(
        message_id=message.message_id, message_type=message.message_name, payload=message.to_json()
    )
    Outbox.objects.filter(pk=row.pk).update(created_at=timezone.now() - age)
    row.refresh_from_db()
    return row
