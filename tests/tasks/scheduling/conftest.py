"""Fixtures for the scheduler and lease tests: in-process schedulers and their log."""

from __future__ import annotations

import logging

import pytest

from config.celery_app import app as celery_app
from tasks.scheduling.scheduler import PlatformScheduler
from tests.support.scheduling import SCHEDULER_LOG


@pytest.fixture
def make_scheduler(transactional_db, redis_client):
    """In-process schedulers with their own identities; closed after the test."""
    made: list[PlatformScheduler] = []

    def make(identity: str) -> PlatformScheduler:
        scheduler = PlatformScheduler(app=celery_app)
        scheduler.lease.identity = identity
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close()


@pytest.fixture
def scheduler_log(caplog):
    caplog.set_level(logging.INFO, logger=SCHEDULER_LOG)
    return caplog
