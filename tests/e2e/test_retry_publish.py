"""A retry that cannot be published (a broker blip that hits exactly the retry's publish) with a
real worker: the task is given back to the queue and still runs to completion, once."""

from __future__ import annotations

import time

import pytest
from django_celery_results.models import TaskResult

from config.celery_app import app
from tasks.models import DeadLetter
from tests.e2e.conftest import fast_recovery_env
from tests.support.outage_tasks import FLAKY_WITH_BROKEN_RETRY, count_lines
from tests.support.processes import CeleryWorker
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker]


def test_a_task_whose_retry_cannot_be_published_runs_to_completion_later(clean_broker, tmp_path):
    runs, effects = tmp_path / "runs", tmp_path / "effects"
    env = fast_recovery_env()
    with CeleryWorker(concurrency=1, env=env, extra_args=("--include", "tests.support.outage_tasks")) as worker:
        task_id = app.send_task(
            FLAKY_WITH_BROKEN_RETRY, kwargs={"runs_path": str(runs), "effects_path": str(effects)}
        ).id
        wait_until(
            lambda: TaskResult.objects.filter(task_id=task_id, status="SUCCESS").exists(),
            timeout=60,
            message=lambda: worker.log()[-3000:],
        )
        time.sleep(2)  # a second run, if any, would come now

    assert (tmp_path / "runs.retry-publish-failed").exists()  # the retry's publish did fail
    assert count_lines(runs) == 3  # failed (retry unpublished), failed (retried), succeeded
    lost, applied_twice = (0 if count_lines(effects) else 1), max(count_lines(effects) - 1, 0)
    assert (lost, applied_twice) == (0, 0)
    assert not DeadLetter.objects.exists()
