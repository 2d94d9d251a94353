import time

import pytest
from django_celery_results.models import TaskResult

from config.celery_app import app
from tasks.tasks import ping


def test_reliability_flags_are_set_on_the_app():
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert conf.task_track_started is True
    assert conf.broker_connection_retry_on_startup is True
    assert conf.result_backend == "tasks.reliability.result_backend:PlatformResultBackend"
    assert conf.result_extended is True


def test_time_limits_stay_below_the_visibility_timeout():
    conf = app.conf
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit
    assert 2 * conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]
    # Dead workers' messages are looked for every few seconds, not kombu's default 100.
    assert conf.broker_transport_options["unacked_restore_interval"] <= 5
    assert conf.broker_transport_options["unacked_restore_throttle"] == 1


def test_three_durable_queues_are_declared():
    queues = {q.name: q for q in app.conf.task_queues}
    assert set(queues) == {"high", "default", "low"}
    assert all(q.durable for q in queues.values())
    assert app.conf.task_default_queue == "default"


def test_tasks_are_routed_by_name_or_explicit_queue():
    router = app.amqp.router
    assert router.route({}, "celery.backend_cleanup")["queue"].name == "low"
    assert router.route({"queue": "high"}, "celery.backend_cleanup")["queue"].name == "high"
    assert router.route({}, "tasks.ping")["queue"].name == "default"


@pytest.mark.slow
def test_a_real_worker_runs_a_task_and_its_result_is_stored(celery_worker_process):
    result = ping.delay()
    deadline = time.monotonic() + 30
    row = None
    while time.monotonic() < deadline:
        row = TaskResult.objects.filter(task_id=result.id, status="SUCCESS").first()
        if row:
            break
        time.sleep(0.2)
    assert row is not None, celery_worker_process.log()[-3000:]
    assert row.task_name == "tasks.ping"
    assert '"pong": true' in row.result
