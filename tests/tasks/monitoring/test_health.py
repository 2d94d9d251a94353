"""Health checks against real dependencies: each fails when its dependency is stopped or stale."""

import json
import threading
import uuid
from datetime import timedelta

import pytest
from celery import current_app
from celery.utils.nodenames import host_format
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from tasks.models import BeatHeartbeat, DeadLetter, Outbox
from tasks.monitoring import health
from tasks.monitoring.health import CheckOutcome, register_check, registered_checks, run_checks, unregister_check
from tests.support.monitoring import record_last_start, send_at
from tests.support.processes import CeleryBeat, CeleryWorker, RedisServer, process_env
from tests.support.waiting import wait_until

REQUIRED = {"database", "broker", "workers", "beat", "outbox"}


@pytest.fixture
def fast_pings(settings, metrics_token):
    settings.HEALTH_WORKER_PING_TIMEOUT = 0.3
    settings.HEALTH_CHECK_TIMEOUT = 5  # margin for a loaded CI machine; a hang is still cut off


def beat_ticked(seconds_ago: float) -> BeatHeartbeat:
    at = timezone.now() - timedelta(seconds=seconds_ago)
    row, _ = BeatHeartbeat.objects.update_or_create(
        name="beat", defaults={"leader": "host:1", "started_at": at, "last_tick_at": at}
    )
    return row


def unsent_outbox_row(seconds_old: float) -> Outbox:
    row = Outbox.objects.create(message_id=uuid.uuid4(), message_type="test.event.v1", payload={})
    Outbox.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(seconds=seconds_old))
    return row


def dead_letter() -> DeadLetter:
    now = timezone.now()
    return DeadLetter.objects.create(
        task_name="tasks.deliver", handler="h", exception_type="ValueError", first_failed_at=now, last_failed_at=now
    )


def get_ready(client) -> tuple[int, dict]:
    """/health/ready as a monitoring reader (the metrics token) sees it: with every check's details."""
    response = client.get(reverse("tasks:health_ready"), headers={"Authorization": f"Bearer {settings.METRICS_TOKEN}"})
    return response.status_code, json.loads(response.content)


# --- The registry -----------------------------------------------------------------------


def test_platform_checks_are_registered_at_startup():
    names = {check.name: check.required for check in registered_checks()}
    assert {name for name, required in names.items() if required} >= REQUIRED
    assert names["dead_letters"] is False
    assert names["queues"] is False
    assert names["queue_consumption"] is False


@pytest.fixture
def only_these_checks():
    """Swap the registry for the test's own checks, then restore the platform's."""
    saved = dict(health._registry)
    health._registry.clear()
    yield
    health._registry.clear()
    health._registry.update(saved)


def test_report_fails_with_the_reason_when_a_required_check_raises(only_these_checks):
    register_check("fine", lambda: CheckOutcome(True, "fine"))
    register_check("broken", lambda: 1 / 0)

    report = run_checks(timeout=2)

    assert not report.ready
    assert [r.name for r in report.failing] == ["broken"]
    assert "ZeroDivisionError" in report.as_dict()["reason"]


def test_report_is_degraded_but_ready_when_only_an_optional_check_fails(only_these_checks):
    register_check("fine", lambda: CheckOutcome(True))
    register_check("nice_to_have", lambda: CheckOutcome(False, "meh"), required=False)

    report = run_checks(timeout=2)

    assert report.ready
    assert report.status == "degraded"
    assert report.as_dict()["checks"]["nice_to_have"]["status"] == "warn"


def test_a_hanging_check_fails_at_the_deadline_and_the_others_still_report(only_these_checks):
    release = threading.Event()
    register_check("hangs", lambda: release.wait(30))
    register_check("fine", lambda: CheckOutcome(True))
    try:
        report = run_checks(timeout=0.5)
    finally:
        release.set()
        unregister_check("hangs")

    checks = report.as_dict()["checks"]
    assert checks["hangs"]["status"] == "fail"
    assert "DeadlineExceeded" in checks["hangs"]["detail"]
    assert checks["fine"]["status"] == "ok"


# --- Each check on its own ---------------------------------------------------------------


@pytest.mark.django_db
def test_beat_check_fails_when_no_beat_ever_ticked():
    outcome = health.check_beat()
    assert not outcome.healthy
    assert "never" in outcome.detail


@pytest.mark.django_db
def test_beat_check_fails_when_the_heartbeat_is_stale(settings):
    settings.HEALTH_BEAT_MAX_AGE = 60
    beat_ticked(seconds_ago=600)
    outcome = health.check_beat()
    assert not outcome.healthy
    assert "limit 60s" in outcome.detail


@pytest.mark.django_db
def test_beat_check_fails_when_the_last_beat_released_the_lock():
    row = beat_ticked(seconds_ago=1)
    BeatHeartbeat.objects.filter(pk=row.pk).update(leader="")
    outcome = health.check_beat()
    assert not outcome.healthy
    assert "no Beat holds the lock" in outcome.detail


@pytest.mark.django_db
def test_beat_check_passes_when_the_heartbeat_is_fresh():
    beat_ticked(seconds_ago=1)
    assert health.check_beat().healthy


@pytest.mark.django_db
def test_outbox_check_fails_when_a_row_stays_unsent(settings):
    settings.HEALTH_OUTBOX_MAX_AGE = 300
    unsent_outbox_row(seconds_old=10)
    assert health.check_outbox().healthy  # young: the commit hook or relay will send it

    unsent_outbox_row(seconds_old=900)
    outcome = health.check_outbox()
    assert not outcome.healthy
    assert outcome.data["unsent"] == 2


@pytest.mark.django_db
def test_dead_letters_check_warns_when_dead_letters_wait():
    assert health.check_dead_letters().healthy
    dead_letter()
    assert not health.check_dead_letters().healthy


def test_queues_check_fails_when_a_message_waits_too_long(redis_client, settings, monkeypatch):

    settings.HEALTH_QUEUE_MAX_AGE = 60
    send_at(monkeypatch, 5, queue="high")
    assert health.check_queues().healthy
    send_at(monkeypatch, 600, queue="low")
    outcome = health.check_queues()
    assert not outcome.healthy
    assert "low" in outcome.detail
    assert outcome.data["queues"]["low"]["depth"] == 1


def test_queue_consumption_check_fails_when_messages_wait_and_nothing_started_from_the_queue(
    redis_client, settings, monkeypatch, tmp_path
):
    settings.PROMETHEUS_METRICS_DIR = tmp_path
    settings.HEALTH_QUEUE_STALLED_AFTER = 600
    record_last_start(tmp_path, "low", seconds_ago=1200)
    record_last_start(tmp_path / "worker-2", "high", seconds_ago=1)
    send_at(monkeypatch, 900, queue="low")
    send_at(monkeypatch, 900, queue="high")  # old, but tasks still start from it: a backlog, not a stall
    send_at(monkeypatch, 900, queue="default")  # no worker here ever started from it: not judged

    outcome = health.check_queue_consumption()

    assert not outcome.healthy
    assert "from low (1 waiting, last start 1200s ago)" in outcome.detail
    assert "high" not in outcome.detail and "default" not in outcome.detail
    assert outcome.data["queues"]["default"] == {"depth": 1, "seconds_since_last_start": None}


def test_a_first_message_after_a_quiet_spell_is_not_taken_for_a_stall(redis_client, settings, monkeypatch, tmp_path):
    settings.PROMETHEUS_METRICS_DIR = tmp_path
    settings.HEALTH_QUEUE_STALLED_AFTER = 600
    record_last_start(tmp_path, "low", seconds_ago=3600)
    send_at(monkeypatch, 5, queue="low")

    assert health.check_queue_consumption().healthy


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_workers_that_stay_up_but_stop_consuming_fail_the_consumption_check(redis_client, settings, tmp_path):
    # The known failure: after a broker reconnect a worker answers pings and consumes nothing.
    # cancel_consumer gives the same shape on purpose.
    settings.HEALTH_QUEUE_STALLED_AFTER = 3
    settings.PROMETHEUS_METRICS_DIR = tmp_path
    with CeleryWorker(env=process_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))) as worker:
        node = [host_format(worker.hostname)]
        current_app.send_task("tasks.ping").get(timeout=30)
        assert health.check_queue_consumption().healthy
        current_app.control.cancel_consumer("default", destination=node, reply=True)
        current_app.send_task("tasks.ping")

        def stalled():
            outcome = health.check_queue_consumption()
            return None if outcome.healthy else outcome

        outcome = wait_until(stalled, timeout=30, message="the stall to be seen")
        assert "from default (1 waiting" in outcome.detail
        assert health.check_workers().healthy  # the worker still answers: only consumption tells

        current_app.control.add_consumer("default", destination=node, reply=True)
        wait_until(lambda: health.check_queue_consumption().healthy, timeout=30, message="consumption to resume")


# --- /health/live and /health/ready --------------------------------------------------------


def test_live_answers_without_touching_any_dependency(client):
    # No django_db mark: any database access here would raise.
    response = client.get(reverse("tasks:health_live"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_endpoints_refuse_other_methods(client):
    assert client.post(reverse("tasks:health_ready")).status_code == 405


@pytest.mark.django_db(transaction=True)
def test_ready_is_503_with_reasons_when_beat_is_stale_and_the_outbox_is_stuck(client, redis_client, fast_pings):
    beat_ticked(seconds_ago=3600)
    unsent_outbox_row(seconds_old=3600)

    status, body = get_ready(client)

    assert status == 503
    assert body["status"] == "fail"
    assert {"beat", "outbox", "workers"} <= set(body["failing"])
    assert "beat:" in body["reason"] and "outbox:" in body["reason"]
    for check in body["checks"].values():
        assert {"status", "latency_ms", "required", "detail"} <= set(check)
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["broker"]["status"] == "ok"


@pytest.mark.slow
def test_ready_is_green_on_a_running_platform_and_503_when_the_worker_stops(
    client, celery_worker_process, fast_pings, settings
):
    settings.HEALTH_WORKER_PING_TIMEOUT = 2
    beat_ticked(seconds_ago=1)

    status, body = get_ready(client)
    assert status == 200, body
    assert body["status"] == "ok"
    assert celery_worker_process.hostname.split("@")[0] in " ".join(body["checks"]["workers"]["workers"])

    celery_worker_process.stop()
    beat_ticked(seconds_ago=1)
    status, body = get_ready(client)
    assert status == 503
    assert body["failing"] == ["workers"]
    assert "no worker answered" in body["reason"]


@pytest.fixture
def private_redis_broker(monkeypatch):
    """A redis-server of this test's own as the broker (Celery reads CELERY_BROKER_URL first)."""
    server = RedisServer().start()
    monkeypatch.setenv("CELERY_BROKER_URL", server.url)
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_ready_is_503_when_the_broker_stops_and_when_it_hangs(client, private_redis_broker, fast_pings, settings):
    beat_ticked(seconds_ago=1)
    status, body = get_ready(client)
    assert body["checks"]["broker"]["status"] == "ok", body
    assert str(private_redis_broker.port) in body["checks"]["broker"]["detail"]

    # Frozen: the port accepts connections but nothing answers. The report still comes back.
    private_redis_broker.freeze()
    answers = []
    request = threading.Thread(target=lambda: answers.append(get_ready(client)))
    request.start()
    request.join(timeout=30)
    assert answers, "/health/ready did not answer while the broker hung"
    status, body = answers[0]
    assert status == 503
    assert "broker" in body["failing"]
    assert "DeadlineExceeded" in body["checks"]["broker"]["detail"]
    assert body["checks"]["database"]["status"] == "ok"

    private_redis_broker.stop()
    status, body = get_ready(client)
    assert status == 503
    assert "broker" in body["failing"]
    assert body["checks"]["queues"]["status"] == "warn"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_ready_recovers_when_a_stuck_outbox_row_is_sent(client, celery_worker_process, fast_pings, settings):
    settings.HEALTH_WORKER_PING_TIMEOUT = 2
    beat_ticked(seconds_ago=1)
    row = unsent_outbox_row(seconds_old=3600)
    assert get_ready(client)[1]["failing"] == ["outbox"]

    Outbox.objects.filter(pk=row.pk).update(sent_at=timezone.now())
    wait_until(lambda: get_ready(client)[0] == 200, timeout=20, message="ready after the outbox drained")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_beat_check_fails_when_the_running_beat_is_killed(redis_client, settings):
    settings.HEALTH_BEAT_MAX_AGE = 3
    beat = CeleryBeat().start()
    try:
        wait_until(lambda: health.check_beat().healthy, timeout=30, message="Beat's heartbeat is fresh")
        assert health.check_beat().data["leader"]
        beat.kill()  # kill -9: no clean release, the heartbeat just stops
        wait_until(lambda: not health.check_beat().healthy, timeout=20, message="the heartbeat goes stale")
    finally:
        beat.stop()
    assert "limit 3s" in health.check_beat().detail
