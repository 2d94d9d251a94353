"""Functions written with Django's task API, for the tests of ``tasks.django_tasks``. Workers load
them with ``--include tests.support.django_jobs``; each run leaves a mark in Redis, so a test
counts runs across processes."""

from __future__ import annotations

import json
import os
import time

import redis

from tasks.django_tasks.compat import task
from tasks.reliability.platform_task import TransientError

RUNS_KEY = "tests:django-jobs:runs"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["TEST_REDIS_URL"])


def runs_of(label: str) -> int:
    """How many times a run labelled ``label`` started, in any process."""
    return int(_redis().hget(RUNS_KEY, label) or 0)


def _count(label: str) -> int:
    return int(_redis().hincrby(RUNS_KEY, label, 1))


@task
def noop_task(*args: object, **kwargs: object) -> None:
    return None


@task
def calculate_meaning_of_life() -> int:
    return 42


@task
def count_run(label: str) -> int:
    """Counts its runs under ``label``; returns the count so far."""
    return _count(label)


@task(priority=50, queue_name="low")
def urgent_on_low(label: str) -> None:
    _count(label)


@task
def failing_task_value_error() -> None:
    raise ValueError("This task failed due to ValueError")


@task
def complex_exception() -> None:
    raise ValueError(ValueError("This task failed"))


@task
def returns_a_set() -> object:
    return {1, 2}


@task
def fails_once_then_succeeds(label: str) -> str:
    """A transient error on its first run, success on the next: a retry through the platform."""
    if _count(label) == 1:
        raise TransientError("first run: the service is briefly down")
    return "second time lucky"


@task(takes_context=True)
def reports_context(context, label: str) -> dict:
    _count(label)
    return {"attempt": context.attempt, "result_id": context.task_result.id}


def plain_function() -> None:
    """Not decorated: a ``Task`` built around it by hand."""


async def _async_body(x: int) -> int:
    return x * 2


@task
async def doubles_async(x: int) -> int:
    return await _async_body(x)


CALLBACKS_KEY = "tests:django-jobs:batch-callbacks"


@task
def batch_finished(batch_id: int, name: str, total: int, done: int, failed: int) -> None:
    """A batch's completion callback: each call recorded (a Redis list), to count them."""
    _redis().rpush(CALLBACKS_KEY, json.dumps([batch_id, name, total, done, failed]))


def batch_callbacks() -> list[list]:
    """Every completion callback that ran, in order: [batch_id, name, total, done, failed]."""
    return [json.loads(raw) for raw in _redis().lrange(CALLBACKS_KEY, 0, -1)]


STARTS_KEY = "tests:django-jobs:starts"


@task
def record_start_time(label: str, seconds: float = 0.0) -> None:
    """Records when it started (a Redis list of "label time"), then takes ``seconds``."""
    _redis().rpush(STARTS_KEY, f"{label} {time.time()}")
    time.sleep(seconds)


def start_times() -> list[tuple[str, float]]:
    """Every recorded start: (label, time)."""
    return [(label, float(at)) for label, at in (raw.decode().split() for raw in _redis().lrange(STARTS_KEY, 0, -1))]


@task
def stops_when_cancelled(label: str) -> str:
    """Works in steps for up to 30 s, asking between steps whether it was cancelled."""
    from tasks.jobs import JobCancelled, cancel_requested  # noqa: PLC0415 (the public front, at run time)

    _count(f"{label}:started")
    for _ in range(300):
        if cancel_requested():
            _count(f"{label}:stopped")
            raise JobCancelled("an operator cancelled it")
        time.sleep(0.1)
    return "ran to the end"


@task
def ignores_cancel(label: str) -> str:
    """Writes to the database, then works for up to 60 s without ever asking about a cancel."""
    from tests.support.ledger.models import Effect  # noqa: PLC0415 (an app model, at run time)

    _count(f"{label}:started")
    Effect.objects.create(key=label)
    time.sleep(60)
    _count(f"{label}:finished")
    return "ran to the end"
