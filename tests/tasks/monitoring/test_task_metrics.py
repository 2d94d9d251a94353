"""Task outcome and duration metrics from real worker processes (prometheus multiprocess mode)."""

import pytest
from celery import current_app
from django.urls import reverse

from tasks.monitoring.task_metrics import reset_multiprocess_dir
from tests.support.monitoring import samples
from tests.support.processes import CeleryWorker, process_env
from tests.support.waiting import wait_until


def test_stale_metric_files_are_removed_when_a_worker_starts(tmp_path):
    (tmp_path / "counter_123.db").write_bytes(b"old run")
    (tmp_path / "keep.txt").write_text("not a metrics file")
    reset_multiprocess_dir(tmp_path / "missing-yet")
    reset_multiprocess_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "missing-yet"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_counters_and_durations_move_when_tasks_succeed_fail_and_retry(
    admin_client_logged_in, redis_client, settings, tmp_path
):
    metrics_dir = tmp_path / "prometheus"
    (metrics_dir).mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left over by a previous run")
    settings.PROMETHEUS_MULTIPROC_DIR = metrics_dir

    def scrape() -> dict:
        response = admin_client_logged_in.get(reverse("tasks:metrics"))
        assert response.status_code == 200
        return samples(response.content.decode())

    def value(found: dict, name: str, task: str) -> float:
        return found.get((name, (("task", task),)), 0.0)

    worker = CeleryWorker(
        concurrency=2,
        env=process_env(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)),
        extra_args=("--include", "tests.support.monitoring_tasks"),
    )
    with worker:
        assert not (metrics_dir / "counter_999999.db").exists()  # cleaned at worker start
        before = scrape()
        assert value(before, "platform_tasks_succeeded_total", "tasks.ping") == 0

        current_app.send_task("tasks.ping")
        current_app.send_task("tasks.ping")
        current_app.send_task("tests.always_fails")
        current_app.send_task("tests.retries_once")

        def settled():
            found = scrape()
            return (
                value(found, "platform_tasks_succeeded_total", "tasks.ping") == 2
                and value(found, "platform_tasks_failed_total", "tests.always_fails") == 1
                and value(found, "platform_tasks_succeeded_total", "tests.retries_once") == 1
                and found
            )

        after = wait_until(settled, timeout=45, message="task metrics from the worker")

    assert value(after, "platform_tasks_retried_total", "tests.retries_once") == 1
    assert value(after, "platform_tasks_failed_total", "tasks.ping") == 0
    assert value(after, "platform_task_duration_seconds_count", "tasks.ping") == 2
    assert value(after, "platform_task_duration_seconds_count", "tests.always_fails") == 1
    assert value(after, "platform_task_duration_seconds_sum", "tasks.ping") > 0
