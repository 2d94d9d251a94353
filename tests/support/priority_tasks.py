"""A task that records the order tasks start in (a Redis list), for the priority tests. Workers
load it with ``--include tests.support.priority_tasks``."""

from __future__ import annotations

import os
import time

import redis
from celery import shared_task

STARTS_KEY = "tests:starts"


@shared_task(name="tests.record_start", ignore_result=True)
def record_start(label: str, work_seconds: float = 0.0) -> None:
    redis.Redis.from_url(os.environ["TEST_REDIS_URL"]).rpush(STARTS_KEY, label)
    time.sleep(work_seconds)
