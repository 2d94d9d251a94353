"""kombu's Redis transport with one fix: a worker survives losing its broker.

When Redis goes away, Celery closes the connection, and kombu's channel can still be asked to
use it: to put its unacknowledged messages back at once, or to acknowledge a task that finished
after the loss (its ack runs in the event loop of the next connection). Either goes through a
connection already released: an AttributeError that Celery reports as "Unrecoverable error",
and the worker exits, never to consume again. Those messages are still in Redis' unacked index,
and any worker restores them after the visibility timeout, so giving up on the early restore
loses nothing; a finished delivery that comes back is a no-op (its Delivery row is done).
``register_redis_transport()`` (called by config/celery_app.py) makes ``redis://`` and
``rediss://`` URLs use it.
"""

from __future__ import annotations

import logging

from kombu import transport
from kombu.transport import redis

logger = logging.getLogger(__name__)


class QoS(redis.QoS):
    def restore_unacked(self, client=None):
        try:
            return super().restore_unacked(client)
        except AttributeError:
            logger.warning(
                "broker connection gone: %d unacknowledged message(s) come back after the visibility timeout",
                len(self._delivered),
            )
            self._delivered.clear()
            return []

    def ack(self, delivery_tag):
        try:
            super().ack(delivery_tag)
        except AttributeError:
            self._forget_on_released_connection(delivery_tag, "acknowledged")

    def reject(self, delivery_tag, requeue=False):
        try:
            super().reject(delivery_tag, requeue=requeue)
        except AttributeError:
            self._forget_on_released_connection(delivery_tag, "rejected")

    def _forget_on_released_connection(self, delivery_tag, action: str) -> None:
        logger.warning(
            "broker connection gone: message %s not %s; it comes back after the visibility timeout",
            delivery_tag,
            action,
        )
        self._delivered.pop(delivery_tag, None)


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel


def register_redis_transport() -> None:
    """Make kombu pick this transport for ``redis://`` and ``rediss://`` URLs."""
    transport.TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
    transport.TRANSPORT_ALIASES["rediss"] = f"{__name__}:Transport"
