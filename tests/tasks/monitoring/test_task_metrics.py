"""Task event metrics under celery-exporter's names, from real worker processes (multiprocess mode)."""

import socket

import pytest
from celery import current_app
from celery.utils.nodenames import host_format
from django.urls import reverse
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tasks.monitoring.task_metrics import ProcessMetricFiles, host_of, reset_multiprocess_dir
from tasks.monitoring.worker_presence import forget_workers
from tests.support.monitoring import record_in_another_process, samples
from tests.support.processes import CeleryWorker, process_env
from tests.support.waiting import wait_until

# celery-exporter's metrics (README "Metrics" table of danihodovic/celery-exporter): family -> type.
CELERY_EXPORTER_METRICS = {
    "celery_task_sent": "counter",
    "celery_task_received": "counter",
    "celery_task_started": "counter",
    "celery_task_succeeded": "counter",
    "celery_task_failed": "counter",
    "celery_task_rejected": "counter",
    "celery_task_revoked": "counter",
    "celery_task_retried": "counter",
    "celery_worker_up": "gauge",
    "celery_worker_tasks_active": "gauge",
    "celery_task_runtime": "histogram",
    "celery_queue_length": "gauge",
    "celery_active_consumer_count": "gauge",
    "celery_active_worker_count": "gauge",
    "celery_active_process_count": "gauge",
}


def families(client) -> dict[str, str]:
    """Family name -> type, as /metrics exposes them."""
    response = client.get(reverse("tasks:metrics"))
    return {family.name: family.type for family in text_string_to_metric_families(response.content.decode())}


def test_stale_metric_files_are_removed_when_a_worker_starts(tmp_path):
    (tmp_path / "counter_123.db").write_bytes(b"old run")
    (tmp_path / "keep.txt").write_text("not a metrics file")
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "counter_456.db").write_bytes(b"another process kind's")
    reset_multiprocess_dir(tmp_path / "missing-yet")
    reset_multiprocess_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "missing-yet", "web"]
    assert (tmp_path / "web" / "counter_456.db").exists()


def test_the_host_label_is_the_host_part_of_the_node_name_as_celery_exporter_has_it():
    assert host_of("celery@web-1") == "web-1"
    assert host_of("web-2") == "web-2"
    assert host_of(None) == "unknown"


@pytest.mark.django_db
def test_a_publish_counts_as_sent_with_the_task_name_queue_and_this_host(redis_client):
    labels = {"name": "tasks.ping", "hostname": socket.gethostname(), "queue_name": "low"}
    before = REGISTRY.get_sample_value("celery_task_sent_total", labels) or 0

    current_app.send_task("tasks.ping", queue="low")

    assert REGISTRY.get_sample_value("celery_task_sent_total", labels) == before + 1


def test_the_files_of_every_process_kind_merge_into_one_family(tmp_path):
    sent = "p.Counter('celery_task_sent', 'Sent.', ['name']).labels(name='t').inc({})"
    record_in_another_process(tmp_path, sent.format(1))  # the worker writes into the directory itself
    record_in_another_process(tmp_path / "web", sent.format(2))
    record_in_another_process(tmp_path / "relay", sent.format(4))

    families = [family for family in ProcessMetricFiles(tmp_path).collect() if family.name == "celery_task_sent"]

    assert len(families) == 1
    assert [(s.name, s.value) for s in families[0].samples if s.name.endswith("_total")] == [
        ("celery_task_sent_total", 7.0)
    ]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_task_events_workers_and_queues_show_under_celery_exporter_names(
    admin_client_logged_in, redis_client, settings, tmp_path
):
    metrics_dir = tmp_path / "prometheus"
    (metrics_dir).mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left over by a previous run")
    settings.PROMETHEUS_METRICS_DIR = metrics_dir
    settings.WORKER_FORGET_AFTER = 600
    forget_workers()

    def scrape() -> dict:
        response = admin_client_logged_in.get(reverse("tasks:metrics"))
        assert response.status_code == 200
        return samples(response.content.decode())

    def value(found: dict, name: str, task: str, **extra: str) -> float:
        labels = {"name": task, "queue_name": "default", "hostname": host, **extra}
        return found.get((name, tuple(sorted(labels.items()))), 0.0)

    worker = CeleryWorker(
        concurrency=2,
        env=process_env(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)),
        extra_args=("--include", "tests.support.monitoring_tasks"),
    )
    with worker:
        host = host_of(host_format(worker.hostname))
        assert not (metrics_dir / "counter_999999.db").exists()  # cleaned at worker start
        before = scrape()
        assert value(before, "celery_task_succeeded_total", "tasks.ping") == 0
        assert before[("celery_worker_up", (("hostname", host),))] == 1
        assert before[("celery_active_worker_count", (("queue_name", "default"),))] == 1
        assert before[("celery_active_process_count", (("queue_name", "default"),))] == 2

        for name in ("tasks.ping", "tasks.ping", "tests.always_fails", "tests.retries_once"):
            current_app.send_task(name)

        def settled():
            found = scrape()
            return (
                value(found, "celery_task_succeeded_total", "tasks.ping") == 2
                and value(found, "celery_task_failed_total", "tests.always_fails", exception="ExpectedTestFailure") == 1
                and value(found, "celery_task_succeeded_total", "tests.retries_once") == 1
                and found
            )

        after = wait_until(settled, timeout=45, message="task metrics from the worker")
        exported = families(admin_client_logged_in)

    assert value(after, "celery_task_retried_total", "tests.retries_once") == 1
    assert value(after, "celery_task_received_total", "tasks.ping") == 2
    assert value(after, "celery_task_started_total", "tasks.ping") == 2
    assert value(after, "celery_task_received_total", "tests.retries_once") == 2  # the retry is a new message
    assert value(after, "celery_task_failed_total", "tasks.ping", exception="ValueError") == 0
    assert value(after, "celery_task_runtime_count", "tasks.ping") == 2
    assert value(after, "celery_task_runtime_count", "tests.always_fails") == 0  # successes only, as the exporter
    assert value(after, "celery_task_runtime_sum", "tasks.ping") > 0
    assert after[("celery_worker_tasks_active", (("hostname", host),))] == 0

    # Every metric celery-exporter documents (its README's table), with its type, as its
    # dashboards and alert rules query them.
    assert {name: exported.get(name) for name in CELERY_EXPORTER_METRICS} == CELERY_EXPORTER_METRICS

    # Stopped, the worker is reported down rather than dropped, so an alert can fire on it.
    gone = scrape()
    assert gone[("celery_worker_up", (("hostname", host),))] == 0
    assert gone[("celery_active_worker_count", (("queue_name", "default"),))] == 0
