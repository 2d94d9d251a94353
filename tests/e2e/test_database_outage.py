"""Database outages with a real worker and a real PostgreSQL that the test stops and starts (a
cluster of its own: the machine's shared PostgreSQL is never stopped). A task is never
acknowledged without its outcome recorded: run once, and its result stored, once the database is
back. Runs are counted in files, since the database is down while they happen."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config.celery_app import app
from tests.e2e.conftest import purge_platform_queues
from tests.support.outage_tasks import FAIL_FOR_GOOD, RECORD_RUN, count_lines
from tests.support.private_postgres import PrivatePostgres
from tests.support.processes import CeleryWorker, ManagedProcess, process_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker]

DATABASE = "outage"
OUTAGE_SECONDS = 25
# Shorter than the outage, so a waiting task is given back to the queue (and taken again) a few times.
DATABASE_WAIT = "3"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    """A private cluster with the project's schema in database ``outage``."""
    cluster = PrivatePostgres().init()
    try:
        cluster.start()
        url = cluster.create_database(DATABASE)
        migrate = ManagedProcess(
            [sys.executable, "manage.py", "migrate", "--noinput"], name="migrate", env=process_env(DATABASE_URL=url)
        ).start(wait=False)
        if migrate.proc.wait(timeout=300):
            raise RuntimeError(migrate.log()[-3000:])
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def empty_broker() -> None:
    if app.conf.broker_url.startswith("redis"):
        redis.Redis.from_url(app.conf.broker_url).flushdb()
    else:
        purge_platform_queues()


@pytest.fixture
def worker(postgres, empty_broker) -> Iterator[CeleryWorker]:
    env = process_env(
        DATABASE_URL=postgres.url(DATABASE), TASKS_DATABASE_WAIT=DATABASE_WAIT, TASKS_RETRY_BACKOFF_MAX="1"
    )
    with CeleryWorker(concurrency=1, env=env, extra_args=("--include", "tests.support.outage_tasks")) as worker:
        yield worker


def _results(postgres: PrivatePostgres, task_id: str) -> list[str]:
    sql = "SELECT status FROM django_celery_results_taskresult WHERE task_id = %s"
    return [status for (status,) in postgres.query(DATABASE, sql, (task_id,))]


def _dead_letters(postgres: PrivatePostgres, task_id: str) -> list[tuple]:
    sql = "SELECT reason, exception_type, status FROM tasks_deadletter WHERE task_id = %s"
    return postgres.query(DATABASE, sql, (task_id,))


def _outage_ended(postgres: PrivatePostgres, worker: CeleryWorker) -> None:
    postgres.start()
    assert worker.running, worker.log()[-3000:]


def test_a_task_sent_while_the_database_is_down_runs_once_and_stores_its_result_when_it_is_back(
    postgres, worker, tmp_path
):
    runs = tmp_path / "runs"
    postgres.stop()
    try:
        task_id = app.send_task(RECORD_RUN, kwargs={"runs_path": str(runs)}).id
        time.sleep(OUTAGE_SECONDS)
        assert count_lines(runs) == 0  # it waits for the database before it starts
    finally:
        _outage_ended(postgres, worker)

    wait_until(lambda: _results(postgres, task_id) == ["SUCCESS"], timeout=90, message=lambda: worker.log()[-3000:])
    time.sleep(2)  # a second run, if any, would come now
    lost, ran_twice = (0 if count_lines(runs) else 1), max(count_lines(runs) - 1, 0)
    assert (lost, ran_twice) == (0, 0)
    assert _results(postgres, task_id) == ["SUCCESS"]


def test_a_task_whose_retries_run_out_while_the_database_is_down_is_a_failure_and_dead_letter_when_it_is_back(
    postgres, worker, tmp_path
):
    runs, final, outage = tmp_path / "runs", tmp_path / "final", tmp_path / "outage"
    paths = {"runs_path": str(runs), "final_path": str(final), "outage_path": str(outage)}
    task_id = app.send_task(FAIL_FOR_GOOD, kwargs=paths).id
    wait_until(final.exists, timeout=60, message=lambda: worker.log()[-3000:])
    postgres.stop()
    try:
        outage.touch()  # the final attempt fails now, with the database down
        time.sleep(OUTAGE_SECONDS)
    finally:
        _outage_ended(postgres, worker)

    wait_until(lambda: _dead_letters(postgres, task_id), timeout=90, message=lambda: worker.log()[-3000:])
    time.sleep(2)
    assert _results(postgres, task_id) == ["FAILURE"]
    assert _dead_letters(postgres, task_id) == [
        ("retries exhausted", "tasks.reliability.platform_task.TransientError", "dead")
    ]
    # Every attempt ran; the final one may run again after the outage, to record its failure.
    attempts = Path(runs).read_text().splitlines()
    assert attempts[:3] == ["retries=0", "retries=1", "retries=2"], attempts
    assert set(attempts[3:]) <= {"retries=2"}, attempts
