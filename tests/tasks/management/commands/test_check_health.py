import json

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tasks.models import BeatHeartbeat


@pytest.fixture
def quick(settings):
    settings.HEALTH_WORKER_PING_TIMEOUT = 0.3


@pytest.mark.django_db(transaction=True)
def test_command_prints_every_check_and_fails_when_the_platform_is_not_ready(capsys, redis_client, quick):
    with pytest.raises(CommandError, match="not ready: workers, beat"):
        call_command("check_health")
    out = capsys.readouterr().out
    for name in ("database", "broker", "workers", "beat", "outbox", "dead_letters", "queues"):
        assert name in out
    assert "Beat has never ticked" in out
    assert "platform: fail" in out


@pytest.mark.django_db(transaction=True)
def test_command_prints_the_ready_json_when_asked(capsys, redis_client, quick):
    BeatHeartbeat.objects.create(name="beat", leader="h:1", last_tick_at=timezone.now())
    with pytest.raises(CommandError):
        call_command("check_health", "--json")
    body = json.loads(capsys.readouterr().out)
    assert body["failing"] == ["workers"]
    assert body["checks"]["beat"]["status"] == "ok"
