"""kombu's Redis transport with one fix: a worker survives losing its broker.

When Redis goes away, Celery closes the connection and kombu's channel then tries to put its
unacknowledged messages back, through a connection already released: an AttributeError that
Celery reports as "Unrecoverable error" and the worker exits, never to consume again. Those
messages are still in Redis' unacked index, and any worker restores them after the visibility
timeout, so giving up on the early restore loses nothing. ``register_redis_transport()``
(called by config/celery_app.py) makes ``redis://`` and ``rediss://`` URLs use it.
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


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel


def register_redis_transport() -> None:
    """Make kombu pick this transport for ``redis://`` and ``rediss://`` URLs."""
    transport.TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
    transport.TRANSPORT_ALIASES["rediss"] = f"{__name__}:Transport"
