"""/metrics and /health/ready: who may read what, and what /metrics says about the platform's state."""

import uuid
from datetime import timedelta

import pytest
from celery import current_app
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from tasks.models import BeatHeartbeat, DeadLetter, Delivery, Outbox
from tasks.monitoring import health
from tests.support.monitoring import samples
from tests.support.processes import free_port
from tests.tasks.monitoring.conftest import METRICS_TOKEN

TOKEN = METRICS_TOKEN


def test_metrics_are_refused_with_401_when_no_credentials_are_sent(client, metrics_token, db):
    response = client.get(reverse("tasks:metrics"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_metrics_are_refused_with_403_when_the_token_is_wrong(client, metrics_token, db):
    response = client.get(reverse("tasks:metrics"), headers={"Authorization": "Bearer not-the-token"})
    assert response.status_code == 403


def test_any_bearer_token_is_refused_when_no_token_is_configured(client, settings, db):
    settings.METRICS_TOKEN = ""
    response = client.get(reverse("tasks:metrics"), headers={"Authorization": "Bearer "})
    assert response.status_code == 401
    response = client.get(reverse("tasks:metrics"), headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403


def test_metrics_are_refused_when_the_user_is_not_staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("visitor", password="pw"))
    assert client.get(reverse("tasks:metrics")).status_code == 403


def test_metrics_are_refused_to_a_staff_user_without_the_monitoring_permission(client, staff_with):
    client.force_login(staff_with())
    response = client.get(reverse("tasks:metrics"))
    assert response.status_code == 403
    assert "tasks.view_deadletter" in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_staff_user_with_the_dead_letter_view_permission_reads_metrics(client, staff_with, redis_client):
    client.force_login(staff_with("tasks.view_deadletter"))
    assert client.get(reverse("tasks:metrics")).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_staff_session_reads_metrics(admin_client_logged_in, redis_client):
    response = admin_client_logged_in.get(reverse("tasks:metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert ("platform_metrics_source_up", (("source", "database"),)) in samples(response.content.decode())


@pytest.mark.django_db(transaction=True)
def test_metrics_report_queues_outbox_dead_letters_and_beat_when_read_with_the_token(
    client, metrics_token, redis_client
):

    now = timezone.now()
    for _ in range(2):
        DeadLetter.objects.create(task_name="t", first_failed_at=now, last_failed_at=now)
    row = Outbox.objects.create(message_id=uuid.uuid4(), message_type="test.event.v1", payload={})
    Outbox.objects.filter(pk=row.pk).update(created_at=now - timedelta(seconds=120))
    BeatHeartbeat.objects.create(name="beat", leader="h:1", last_tick_at=now - timedelta(seconds=30))
    every_minute = CrontabSchedule.objects.create(minute="*", hour="*", timezone="UTC")
    schedule = PeriodicTask.objects.create(name="every minute", task="tasks.ping", crontab=every_minute)
    PeriodicTask.objects.filter(pk=schedule.pk).update(date_changed=now - timedelta(minutes=10))
    for _ in range(3):
        current_app.send_task("tasks.ping", queue="low")
    for status in ("waiting", "waiting", "done"):
        Delivery.objects.create(
            message_id=uuid.uuid4(), handler="app.notify", message_type="t", payload={}, queue="low", status=status
        )

    response = client.get(reverse("tasks:metrics"), headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 200
    found = samples(response.content.decode())
    assert found[("platform_dead_letters", ())] == 2
    assert found[("platform_deliveries_waiting", (("handler", "app.notify"),))] == 2
    assert found[("platform_outbox_unsent_messages", ())] == 1
    assert found[("platform_outbox_oldest_unsent_age_seconds", ())] >= 120
    assert found[("platform_beat_heartbeat_age_seconds", ())] >= 30
    assert found[("platform_queue_depth", (("queue", "low"),))] == 3
    assert found[("platform_queue_depth", (("queue", "high"),))] == 0
    assert ("platform_queue_oldest_message_age_seconds", (("queue", "low"),)) in found
    assert ("platform_queue_oldest_message_age_seconds", (("queue", "high"),)) not in found
    assert found[("platform_metrics_source_up", (("source", "broker"),))] == 1
    # The same facts under celery-exporter's names, for its dashboards and alert rules.
    assert found[("celery_queue_length", (("queue_name", "low"),))] == 3
    assert found[("celery_queue_length", (("queue_name", "high"),))] == 0
    assert found[("celery_active_worker_count", (("queue_name", "low"),))] == 0  # no worker runs here
    assert found[("platform_metrics_source_up", (("source", "workers"),))] == 1
    # No Beat ran: the schedule's runs of the last ten minutes were all missed.
    assert found[("platform_schedule_runs", (("outcome", "missed"), ("schedule", "every minute")))] >= 8
    assert found[("platform_schedule_runs", (("outcome", "on_time"), ("schedule", "every minute")))] == 0


@pytest.mark.django_db(transaction=True)
def test_queue_metrics_are_missing_and_the_source_is_down_when_the_broker_is_unreachable(
    client, metrics_token, monkeypatch
):
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")

    response = client.get(reverse("tasks:metrics"), headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 200
    found = samples(response.content.decode())
    assert found[("platform_metrics_source_up", (("source", "broker"),))] == 0
    assert found[("platform_metrics_source_up", (("source", "database"),))] == 1
    assert not any(name == "platform_queue_depth" for name, _ in found)
    assert ("platform_dead_letters", ()) in found


# --- /health/ready: the status for anyone, the details for monitoring readers ----------------
@pytest.fixture
def failing_database_check(monkeypatch):
    """The database check fails as a driver would, with connection details in its message."""

    def broken():
        raise OSError('connection to server at "db.internal" (10.1.2.3), port 5432 failed')

    monkeypatch.setitem(health._registry, "database", health.RegisteredCheck("database", broken, required=True))


def ready(client, **headers):
    response = client.get(reverse("tasks:health_ready"), headers=headers)
    return response.status_code, response.json() if response["Content-Type"] == "application/json" else None


@pytest.mark.django_db(transaction=True)
def test_anonymous_readiness_is_the_status_alone_without_hosts_or_errors(
    client, staff_with, metrics_token, failing_database_check, redis_client
):
    status, body = ready(client)
    assert (status, body) == (503, {"status": "fail"})

    client.force_login(staff_with())  # staff without the permission: no more than anonymous
    assert ready(client) == (503, {"status": "fail"})


@pytest.mark.django_db(transaction=True)
def test_readiness_details_need_the_metrics_token_or_the_monitoring_permission(
    client, staff_with, metrics_token, failing_database_check, redis_client
):
    status, body = ready(client, Authorization=f"Bearer {TOKEN}")
    assert status == 503
    assert "10.1.2.3" in body["checks"]["database"]["detail"]
    assert "workers" in body["checks"] and "beat" in body["checks"]

    client.force_login(staff_with("tasks.view_deadletter"))
    status, body = ready(client)
    assert status == 503 and "database" in body["failing"]


def test_readiness_with_a_wrong_token_is_refused(client, metrics_token, db):
    assert ready(client, Authorization="Bearer not-the-token") == (403, None)
