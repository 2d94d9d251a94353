"""Fixtures for the platform's tests: Beat processes, a worker that knows the test-only tasks, the
flow-limited handlers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tasks.messaging.flow_limit_overrides import flow_limit_overrides_forget
from tests.support.flow_limit_handlers import subscribed as flow_limited_subscribed
from tests.support.processes import CeleryBeat, CeleryWorker, process_env


@pytest.fixture
def start_beat(transactional_db, redis_client) -> Iterator[Callable[..., CeleryBeat]]:
    """Start ``celery beat`` processes with the platform scheduler; all are stopped after the test."""
    started: list[CeleryBeat] = []

    def start(**env: str) -> CeleryBeat:
        beat = CeleryBeat(env=process_env(**env))
        started.append(beat)
        return beat.start()

    yield start
    for beat in started:
        beat.stop(timeout=10)


@pytest.fixture
def schedule_worker(transactional_db, redis_client) -> Iterator[CeleryWorker]:
    """A real worker on every queue that also runs ``tests.support.schedule_tasks``."""
    worker = CeleryWorker(concurrency=3, extra_args=("--include", "tests.support.schedule_tasks"))
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def flow_limited_handlers():
    """The rate- and concurrency-limited test handlers subscribed, and no override remembered."""
    flow_limit_overrides_forget()
    with flow_limited_subscribed():
        yield
    flow_limit_overrides_forget()
