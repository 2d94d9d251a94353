"""/metrics: who may read it, and what it says about the platform's state."""

import uuid
from datetime import timedelta

import pytest
from celery import current_app
from django.urls import reverse
from django.utils import timezone

from tasks.models import BeatHeartbeat, DeadLetter, Outbox
from tests.support.monitoring import samples
from tests.support.processes import free_port

TOKEN = "metrics-token-for-tests"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


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
    for _ in range(3):
        current_app.send_task("tasks.ping", queue="low")

    response = client.get(reverse("tasks:metrics"), headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 200
    found = samples(response.content.decode())
    assert found[("platform_dead_letters", ())] == 2
    assert found[("platform_outbox_unsent_messages", ())] == 1
    assert found[("platform_outbox_oldest_unsent_age_seconds", ())] >= 120
    assert found[("platform_beat_heartbeat_age_seconds", ())] >= 30
    assert found[("platform_queue_depth", (("queue", "low"),))] == 3
    assert found[("platform_queue_depth", (("queue", "high"),))] == 0
    assert ("platform_queue_oldest_message_age_seconds", (("queue", "low"),)) in found
    assert ("platform_queue_oldest_message_age_seconds", (("queue", "high"),)) not in found
    assert found[("platform_metrics_source_up", (("source", "broker"),))] == 1


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
