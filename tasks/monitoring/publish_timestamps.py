"""Stamp every published task with the time it was sent, so queue age can be measured.

Celery's messages carry no send time. ``x-sent-at`` (seconds since the epoch, a float) is added
to the message headers of every task published by any process that loaded this app (web,
relay, Beat, workers); ``tasks.monitoring.queue_stats`` reads it back from the oldest waiting message.
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import before_task_publish

SENT_AT_HEADER = "x-sent-at"


def stamp_sent_at(sender: str | None = None, headers: dict | None = None, **kwargs: Any) -> None:
    """Set ``x-sent-at`` on the outgoing message's headers.

    Always overwritten: a retry republishes the request's headers, and its age in the queue
    starts when it is sent again, not when the first attempt was.
    """
    if headers is not None:
        headers[SENT_AT_HEADER] = time.time()


def connect() -> None:
    """Stamp every task this process publishes; called from ``TasksConfig.ready()``."""
    before_task_publish.connect(stamp_sent_at, dispatch_uid="tasks.monitoring.publish_timestamps.stamp_sent_at")
