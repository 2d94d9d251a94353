"""The hard stop: a running job that has not stopped ``CANCEL_HARD_STOP_AFTER`` seconds after a
cancel was asked is killed, and its delivery ends cancelled (the relay's ``hard stop`` pass).

A cooperative cancel (``cancel_requested()``/``JobCancelled``) only stops a handler that asks.
When the setting is on, the relay asks the workers (Celery's ``revoke(terminate=True)``, sent to
every worker through the broker) to kill the pool process running the delivery's task; the
handler's transaction dies with the process, so its work rolls back, and the revoked id keeps a
redelivered copy from starting. Then the delivery is marked cancelled: its row is locked by the
handler's transaction until the process is gone, so the mark waits for that a moment, and a pass
that cannot get it yet tries again on the next one. Off by default (0): killing a process
mid-handler is the operator's choice, made per deployment.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import OperationalError
from django.db.models import Exists, OuterRef
from django.utils import timezone

from tasks.models import Delivery, DeliveryCancelRequest
from tasks.reliability.delivery_state import delivery_stop_forced

logger = logging.getLogger(__name__)


def deliveries_stop_overdue(*, limit: int = 100) -> int:
    """Kill the running deliveries whose cancel request is older than ``CANCEL_HARD_STOP_AFTER``
    and mark them cancelled; return how many were marked. Nothing when the setting is 0."""
    if not settings.CANCEL_HARD_STOP_AFTER:
        return 0
    cutoff = timezone.now() - timedelta(seconds=settings.CANCEL_HARD_STOP_AFTER)
    overdue_request = DeliveryCancelRequest.objects.filter(
        message_id=OuterRef("message_id"), handler=OuterRef("handler"), requested_at__lte=cutoff
    )
    overdue = Delivery.objects.filter(Exists(overdue_request), status=Delivery.Status.RUNNING)
    stopped = 0
    for message_id, handler, task_id in overdue.values_list("message_id", "handler", "task_id")[:limit]:
        if task_id:
            current_app.control.revoke(task_id, terminate=True, signal="SIGKILL")
        try:
            if delivery_stop_forced(message_id=message_id, handler=handler):
                stopped += 1
                logger.warning("hard-stopped delivery %s for %s: it ignored its cancel", message_id, handler)
        except OperationalError:
            logger.info(
                "delivery %s for %s is still held by its process; stopped on the next pass", message_id, handler
            )
    return stopped
