"""Outbox rows: events written in the business transaction, published after it commits.

``register_event`` writes an Outbox row in the current transaction. After commit the message's
sync handlers run and its async deliveries go to the process's publisher thread
(``tasks.messaging.publisher``), which sends them and marks the row sent: the event is durable
when the commit returns, and on the broker a few milliseconds later while the broker is up. On
rollback, including a rolled-back savepoint, the row and the publish vanish with it. What the
publisher cannot send (a broker down or hanging, a process that dies) waits in the outbox for
the relay.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from tasks.messages import Message
from tasks.messaging.brokers import RecordingBroker, get_recording_broker
from tasks.messaging.deliveries import DispatchError, deliveries_plan, deliveries_to_send
from tasks.messaging.round_trips import insert_together
from tasks.messaging.trace_context import trace_context_capture, tracer
from tasks.messaging.unique_deliveries import deliveries_insert_unique
from tasks.models import Delivery, Outbox

logger = logging.getLogger(__name__)


def register_event(message: Message, *, run_after: datetime | None = None, delay: timedelta | None = None) -> None:
    """Record ``message`` in the outbox now; publish it after the transaction commits.

    Its async deliveries are recorded in the same transaction, so after commit only the broker
    is asked, by the publisher thread. Outside a transaction it acts as a one-statement
    transaction: it commits and hands the event to the publisher at once.

    With ``run_after`` (an aware datetime) or ``delay``, the async deliveries are held in the
    database and the relay sends them when due (sync handlers still run after the commit); until
    then ``event_cancel`` withdraws them.
    """
    if not isinstance(message, Message):
        raise TypeError(f"register_event takes a Message, not {type(message).__name__}")
    if run_after is not None and delay is not None:
        raise TypeError("register_event takes run_after or delay, not both")
    if delay is not None:
        run_after = timezone.now() + delay
    if run_after is not None and timezone.is_naive(run_after):
        raise ValueError("run_after must be an aware datetime")
    broker = get_recording_broker()
    with tracer.start_as_current_span(
        f"register_event {message.message_name}", attributes={"messaging.message.id": str(message.message_id)}
    ):
        # Every send of this event, now or after an outage, continues from this span.
        carrier = trace_context_capture()
        row = Outbox(
            message_id=message.message_id,
            message_type=message.message_name,
            payload=message.to_json(),
            trace_context=carrier,
        )
        # A predicate that raises gives an unplanned row (the relay plans it again), never no row.
        deliveries = deliveries_plan(message, broker.async_plan(message), trace_context=carrier, run_after=run_after)
        # No savepoint of its own: one INSERT statement per table needs none, and it saves two
        # round trips per event; the two INSERTs themselves go out as one query.
        unique = [d for d in deliveries if d.unique_key]
        with transaction.atomic(savepoint=False):
            insert_together(row, [d for d in deliveries if not d.unique_key])
            if unique:  # unique jobs: a dropped or debounced one is not sent
                kept = {id(d) for d in deliveries_insert_unique(unique)}
                deliveries = [d for d in deliveries if not d.unique_key or id(d) in kept]
            transaction.on_commit(
                functools.partial(outbox_publish_after_commit, row.pk, message, deliveries_to_send(deliveries), broker)
            )


def outbox_publish_after_commit(
    outbox_id: int, message: Message, deliveries: list[Delivery], broker: RecordingBroker
) -> None:
    """Publish one committed event (its row is marked sent once it is on the broker); never
    raises: what fails waits in the outbox for the relay."""
    try:
        broker.publish_recorded(message, deliveries, outbox_id)
    except DispatchError:
        return  # already logged
    except Exception:
        logger.exception("publishing after commit failed", extra={"message_id": str(message.message_id)})
