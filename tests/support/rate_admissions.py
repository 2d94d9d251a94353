"""When the rate limiter admitted each job, recorded in the worker processes that asked it.

A job's own record of its start comes a variable moment after its admission (a loaded machine
can pause a process for longer than a rate's period allows for), so a test of the limit reads the
admissions themselves: each is the time just before and just after the limiter's call, between
which the limiter took the timestamp it counts.
"""

from __future__ import annotations

import time

import redis
from django.conf import settings
from limits.strategies import MovingWindowRateLimiter

ADMITTED = "flow-test:admitted"


def admissions_record() -> None:
    """In this process, record each admitting hit on the limiter in a Redis list per handler."""
    hit = MovingWindowRateLimiter.hit
    clients: dict[str, redis.Redis] = {}

    def recorded_hit(self, item, *identifiers: str, cost: int = 1) -> bool:
        before = time.time()
        admitted = hit(self, item, *identifiers, cost=cost)
        after = time.time()
        if admitted:
            url = settings.FLOW_LIMITS_REDIS_URL
            client = clients.setdefault(url, redis.Redis.from_url(url))
            client.rpush(f"{ADMITTED}:{identifiers[1]}", f"{before} {after}")
        return admitted

    MovingWindowRateLimiter.hit = recorded_hit


def admissions(client: redis.Redis, handler: str) -> list[tuple[float, float]]:
    """(before, after) of each admission of a job of ``handler``, in the order they were recorded."""
    return [tuple(map(float, entry.split())) for entry in client.lrange(f"{ADMITTED}:{handler}", 0, -1)]
