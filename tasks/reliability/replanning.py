"""Planning again the deliveries whose predicate raised (status ``unplanned``): a relay pass.

``register_event`` and the relay record such a delivery as ``unplanned`` with the predicate's
error instead of dropping it. This pass evaluates the predicate again once the row is due
(``sent_at``, pushed back with exponential backoff after each failure):

- true: the delivery becomes pending and is sent, as if the predicate had never failed;
- false: the row is deleted, exactly what a false predicate leaves at publish time (no row);
- error again: the failure is counted (``attempts``, ``last_error``) and after
  ``RELAY_ROW_MAX_FAILURES`` the delivery becomes a dead letter with the error. Requeueing that
  dead letter runs the handler: the operator has decided the event is wanted.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from tasks.messages import Message
from tasks.messaging.brokers import async_subscription_resolve
from tasks.messaging.deliveries import DispatchError, deliveries_publish_each
from tasks.models import Delivery
from tasks.reliability.delivery_state import delivery_plan
from tasks.reliability.send_failures import delivery_send_failed, failure_record

logger = logging.getLogger(__name__)

UNPLANNED = Delivery.Status.UNPLANNED
PREDICATE_FAILED = "predicate failed"


class PlanningError(LookupError):
    """The delivery's handler is no longer subscribed to its message type."""


def deliveries_replan(*, limit: int = 100) -> int:
    """Evaluate the predicate of due unplanned deliveries again; return how many were sent."""
    due = list(Delivery.objects.filter(status=UNPLANNED, sent_at__lte=timezone.now()).order_by("sent_at")[:limit])
    wanted = []
    for row in due:
        try:
            if _wants(row):
                wanted.append(row)
            else:
                Delivery.objects.filter(pk=row.pk, status=UNPLANNED).delete()
                logger.info("delivery %s not wanted after all; removed", row.pk)
        except Exception as exc:
            failure_record(delivery=row, exc=exc, statuses=(UNPLANNED,), reason=PREDICATE_FAILED)
    planned = [row for row in wanted if _plan(row)]
    if not planned:
        return 0
    try:
        refused = deliveries_publish_each(planned)
    except DispatchError:
        # Pending and recorded: the sweeper sends them once the broker is back.
        logger.warning("broker unavailable; %d planned deliveries wait for the sweeper", len(planned))
        return 0
    for row, exc in refused:
        delivery_send_failed(delivery=row, exc=exc)
    return len(planned) - len(refused)


def _wants(row: Delivery) -> bool:
    message = Message.from_json(row.payload)
    # The subscription a worker would run for this row: its handler path, or one it replaces.
    subscription = async_subscription_resolve(type(message), row.handler)
    if subscription is None:
        raise PlanningError(f"{row.handler} is not subscribed to {row.message_type}")
    return subscription.wants(message)


def _plan(row: Delivery) -> bool:
    """unplanned -> pending, sent now; False when another relay got there first."""
    now = timezone.now()
    if not delivery_plan(message_id=row.message_id, handler=row.handler, sent_at=now):
        return False
    # Its planning failures are history now: attempts count the worker's starts from here.
    Delivery.objects.filter(pk=row.pk).update(send_count=1, attempts=0)
    row.status, row.sent_at = Delivery.Status.PENDING, now
    return True
