"""``DeliverRequest``: a delivery the worker itself cancels gives its start back.

A delivery's start is counted when it begins; a start that never finishes counts toward
``DELIVERY_MAX_UNFINISHED_STARTS`` (a message that kills its worker is dead-lettered). But the
worker's main process also cancels running tasks on purpose: at a cold shutdown after
``worker_soft_shutdown_timeout`` (a deploy's SIGTERM, remapped to SIGQUIT) and when it loses its
broker connection (``worker_cancel_long_running_tasks_on_connection_loss``). Both go through
``Request.cancel`` in the main process (celery.worker.consumer ``cancel_active_requests`` and
``on_connection_error_after_connected``), which terminates the pool process and leaves the
message unacknowledged for redelivery. That interruption is the platform's, not the message's,
so this request class uncounts the start once the pool process is told to stop.

A worker killed whole (kill -9, OOM) or a pool process that dies in the handler never gets
here: those starts still count.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.request import Request
from django.db import close_old_connections

from tasks.reliability.delivery_state import delivery_give_back

logger = logging.getLogger(__name__)


class DeliverRequest(Request):
    """The worker-side request of ``tasks.deliver``: cancelling it gives the start back."""

    def cancel(self, pool: Any, signal: Any = None, emit_retry: bool = True) -> None:
        started = bool(self.time_start)
        # Terminate first: the pool process may hold the delivery's row in its transaction,
        # which ends when the process does.
        super().cancel(pool, signal=signal, emit_retry=emit_retry)
        if started:
            self.give_back_start()

    def give_back_start(self) -> None:
        """Uncount this request's start of its delivery (running -> pending); never raises, as the
        worker's shutdown or reconnection must go on."""
        payload, handler = (*self.args, None, None)[:2]
        data = payload.get("data") if isinstance(payload, dict) else None
        message_id = data.get("message_id") if isinstance(data, dict) else None
        if not message_id or not isinstance(handler, str):
            return
        try:
            close_old_connections()  # the main process's connection may be old or broken
            given = delivery_give_back(message_id=message_id, handler=handler)
        except Exception:
            logger.exception("could not give back the start of %s for %s", message_id, handler)
            return
        if given:
            logger.info("cancelled delivery %s for %s: its start does not count", message_id, handler)
