"""Outbox rows: events written in the business transaction, published after it commits.

``register_event`` writes an Outbox row in the current transaction and publishes the message
after commit (sync handlers, then async deliveries), marking the row sent. On rollback,
including a rolled-back savepoint, the row and the publish vanish with it. A broker outage
at commit is logged, never raised: the row stays unsent and the relay sends it later.
"""

from __future__ import annotations

import functools
import logging

from django.db import transaction
from django.utils import timezone

from tasks.messages import Message
from tasks.messaging.brokers import RecordingBroker, get_recording_broker
from tasks.messaging.deliveries import DispatchError, deliveries_plan, deliveries_to_send
from tasks.messaging.round_trips import execute_with_async_commit, insert_together
from tasks.models import Delivery, Outbox

logger = logging.getLogger(__name__)


def register_event(message: Message) -> None:
    """Record ``message`` in the outbox now; publish it after the transaction commits.

    Its async deliveries are recorded in the same transaction, so after commit only the broker
    is asked. Outside a transaction it acts as a one-statement transaction: it commits and
    publishes at once.
    """
    if not isinstance(message, Message):
        raise TypeError(f"register_event takes a Message, not {type(message).__name__}")
    broker = get_recording_broker()
    row = Outbox(message_id=message.message_id, message_type=message.message_name, payload=message.to_json())
    # A predicate that raises gives an unplanned row (the relay plans it again), never no row.
    deliveries = deliveries_plan(message, broker.async_plan(message))
    # No savepoint of its own: one INSERT statement per table needs none, and it saves two
    # round trips per event; the two INSERTs themselves go out as one query.
    with transaction.atomic(savepoint=False):
        insert_together(row, deliveries)
        transaction.on_commit(
            functools.partial(outbox_publish_after_commit, row.pk, message, deliveries_to_send(deliveries), broker)
        )


def outbox_publish_after_commit(
    outbox_id: int, message: Message, deliveries: list[Delivery], broker: RecordingBroker
) -> None:
    """Publish one committed event and mark its outbox row sent; never raises."""
    try:
        broker.publish_recorded(message, deliveries)
    except DispatchError:
        # Already logged; the event waits in the outbox for the relay.
        return
    except Exception:
        logger.exception("publishing after commit failed", extra={"message_id": str(message.message_id)})
        return
    outbox_mark_sent(outbox_ids=[outbox_id])


def outbox_mark_sent(*, outbox_ids: list[int]) -> None:
    """Mark rows sent, without waiting for the disk: a mark lost in a crash only makes the
    relay send the event again, which idempotent deliveries absorb."""
    if not outbox_ids:
        return  # "IN ()" is not SQL
    execute_with_async_commit(
        f"UPDATE {Outbox._meta.db_table} SET sent_at = %s WHERE id IN ({', '.join(['%s'] * len(outbox_ids))})",  # noqa: S608 (table from the model, values bound)
        [timezone.now(), *outbox_ids],
    )
