"""Workers honour paused queues (``tasks.messaging.queue_pauses``).

``QueuePauseStep``, a step of every worker's consumer, reads the paused set every
``QUEUE_PAUSE_POLL_SECONDS`` (and once as the consumer starts, before it takes any message) and
stops or restarts consuming each queue accordingly, as Celery's ``cancel_consumer`` and
``add_consumer`` remote commands do, but from the database: a broadcast a worker misses (it was
restarting) cannot leave it consuming a paused queue. Workers prefetch one message per process
slot (``acks_late``, multiplier 1), so none waits reserved behind a running job to start later.

This module is imported by the Celery app before Django is set up: the models are imported late.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

logger = logging.getLogger(__name__)


class QueuePauseStep(bootsteps.StartStopStep):
    """Stop consuming paused queues and start again once they are resumed."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.stopped: set[str] = set()
        self.timer_ref: Any = None
        self.failing = False

    def start(self, parent: Any) -> None:
        from django.conf import settings  # noqa: PLC0415 (Django is set up once the worker starts)

        self.sync(parent)
        self.timer_ref = parent.timer.call_repeatedly(settings.QUEUE_PAUSE_POLL_SECONDS, self.sync, (parent,))

    def stop(self, parent: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def sync(self, parent: Any) -> None:
        """Cancel the paused queues this worker consumes; consume again those resumed."""
        from django.db import close_old_connections  # noqa: PLC0415

        from tasks.messaging.queue_pauses import paused_queues  # noqa: PLC0415

        try:
            close_old_connections()
            paused = paused_queues()
        except Exception:
            # The database is away: keep consuming as now, and say so once.
            if not self.failing:
                logger.exception("could not read the paused queues; consuming as before")
            self.failing = True
            return
        self.failing = False
        consumer = parent.task_consumer
        consuming = {queue.name for queue in consumer.queues} if consumer is not None else set()
        for queue in sorted(paused & consuming):
            parent.cancel_task_queue(queue)
            self.stopped.add(queue)
            logger.warning("queue %s is paused: no longer consuming it", queue)
        for queue in sorted(self.stopped - paused):
            parent.add_task_queue(queue)
            self.stopped.discard(queue)
            logger.warning("queue %s is resumed: consuming it again", queue)
