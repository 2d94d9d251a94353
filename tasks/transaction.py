"""``transactional`` and ``register_event``: events that exist only if the transaction commits.

``register_event`` writes an Outbox row in the current transaction and publishes the message
after commit (sync handlers, then async deliveries), marking the row sent. On rollback,
including a rolled-back savepoint, the row and the publish vanish with it. A broker outage
at commit is logged, never raised: the row stays unsent and the relay sends it later.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import transaction
from django.utils import timezone

from tasks.bus import get_message_broker
from tasks.dispatch import DispatchError
from tasks.messages import Message
from tasks.models import Outbox

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def transactional(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` inside ``transaction.atomic()`` (a savepoint when already in one)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with transaction.atomic():
            return func(*args, **kwargs)

    return wrapper


def register_event(message: Message) -> None:
    """Record ``message`` in the outbox now; publish it after the transaction commits.

    Outside a transaction it acts as a one-statement transaction: it commits and publishes
    at once.
    """
    if not isinstance(message, Message):
        raise TypeError(f"register_event takes a Message, not {type(message).__name__}")
    with transaction.atomic():
        row = Outbox.objects.create(
            message_id=message.message_id, message_type=message.message_name, payload=message.to_json()
        )
        transaction.on_commit(functools.partial(publish_after_commit, row.pk, message))


def publish_after_commit(outbox_id: int, message: Message) -> None:
    """Publish one committed event and mark its outbox row sent; never raises."""
    try:
        get_message_broker().publish(message)
    except DispatchError:
        # Already logged; the event waits in the outbox for the relay.
        return
    except Exception:
        logger.exception("publishing after commit failed", extra={"message_id": str(message.message_id)})
        return
    Outbox.objects.filter(pk=outbox_id).update(sent_at=timezone.now())
